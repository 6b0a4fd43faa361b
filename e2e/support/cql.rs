//! The CQL side: sessions as the test superuser or a test's own role, and a fresh
//! keyspace and role per test.

use std::time::Duration;

use lotus_follower::store::cql::CqlOptions;
use scylla::client::{session::Session, session_builder::SessionBuilder};

use crate::{TestBed, names};

impl TestBed {
    /// The CQL store's options for `keyspace` on the test bed's Cassandra, as
    /// the test superuser (plaintext, 10 s request timeout).
    pub fn cql_store_options(&self, keyspace: &str) -> CqlOptions {
        CqlOptions {
            contact_points: vec![self.cql_node.clone()],
            keyspace: keyspace.to_owned(),
            username: Some(self.cql_username.clone()),
            password: Some(self.cql_password.clone()),
            request_timeout: Duration::from_secs(10),
            local_dc: None,
            address_map: Vec::new(),
            tls_ca_file: None,
        }
    }

    /// A session as the test superuser, for set-up: creating keyspaces and roles.
    pub async fn cql_superuser_session(&self) -> anyhow::Result<Session> {
        self.cql_session_as(&self.cql_username, &self.cql_password)
            .await
    }

    /// A session as `user`, as a follower or an ingester would log in.
    pub async fn cql_session_as(&self, user: &str, password: &str) -> anyhow::Result<Session> {
        SessionBuilder::new()
            .known_node(&self.cql_node)
            .user(user, password)
            .build()
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot open a CQL session at {} as {user}: {error}",
                    self.cql_node
                )
            })
    }
}

/// A keyspace of one test's own (replication factor 1: the test bed has one node).
#[derive(Debug)]
pub struct TestKeyspace {
    pub name: String,
}

impl TestKeyspace {
    pub async fn create(session: &Session, test: &str) -> anyhow::Result<Self> {
        let name = names::unique(test, '_');
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE {name} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                ),
                (),
            )
            .await?;
        Ok(Self { name })
    }

    pub async fn drop(self, session: &Session) -> anyhow::Result<()> {
        session
            .query_unpaged(format!("DROP KEYSPACE {}", self.name), ())
            .await?;
        Ok(())
    }
}

/// A login role of one test's own, with a random password and no permissions
/// until the test grants some.
#[derive(Debug)]
pub struct TestRole {
    pub name: String,
    pub password: String,
}

impl TestRole {
    pub async fn create(session: &Session, test: &str) -> anyhow::Result<Self> {
        let name = names::unique(test, '_');
        let password = uuid::Uuid::new_v4().simple().to_string();
        session
            .query_unpaged(
                format!("CREATE ROLE {name} WITH LOGIN = true AND PASSWORD = '{password}'"),
                (),
            )
            .await?;
        Ok(Self { name, password })
    }

    pub async fn drop(self, session: &Session) -> anyhow::Result<()> {
        session
            .query_unpaged(format!("DROP ROLE {}", self.name), ())
            .await?;
        Ok(())
    }
}
