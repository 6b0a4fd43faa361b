//! The test bed's coordinates, read from the variables `e2e/testbed env` prints.

use std::path::PathBuf;

/// Where the test bed's components are and how to log in to them.
#[derive(Debug, Clone)]
pub struct TestBed {
    /// The admin kubeconfig (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// Cassandra's native-protocol address, `127.0.0.1:9042`.
    pub cql_node: String,
    /// The test superuser, for test set-up only: tests create their own roles.
    pub cql_username: String,
    pub cql_password: String,
    /// The API server's audit log (JSON lines, one per write).
    pub audit_log: PathBuf,
    /// The directory of the components' logs, `<component>.log` each.
    pub log_dir: PathBuf,
    /// The CA that signs Cassandra's client TLS certificate (TLS is optional on
    /// the same port). `None` from a test bed started before it had TLS.
    pub cql_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestBedError {
    #[error(
        "{0} is not set: start the test bed with `e2e/testbed up` and `eval \"$(e2e/testbed env)\"`, \
         or run the whole suite with `e2e/testbed test`"
    )]
    NotSet(&'static str),
    #[error("cannot read {path} (named by {var}): {source}")]
    Unreadable {
        var: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TestBed {
    pub fn from_env() -> Result<Self, TestBedError> {
        // Every test starts here, before any kube or CQL client exists.
        lotus_follower::tls::install_default_provider();
        let password_file = PathBuf::from(var("LOTUS_FOLLOWER_TESTBED_CQL_PASSWORD_FILE")?);
        let cql_password = std::fs::read_to_string(&password_file)
            .map_err(|source| TestBedError::Unreadable {
                var: "LOTUS_FOLLOWER_TESTBED_CQL_PASSWORD_FILE",
                path: password_file,
                source,
            })?
            .trim()
            .to_owned();
        Ok(Self {
            kubeconfig: var("KUBECONFIG")?.into(),
            cql_node: var("LOTUS_FOLLOWER_TESTBED_CQL")?,
            cql_username: var("LOTUS_FOLLOWER_TESTBED_CQL_USERNAME")?,
            cql_password,
            audit_log: var("LOTUS_FOLLOWER_TESTBED_AUDIT_LOG")?.into(),
            log_dir: var("LOTUS_FOLLOWER_TESTBED_LOG_DIR")?.into(),
            cql_ca_file: var("LOTUS_FOLLOWER_TESTBED_CQL_CA_FILE")
                .ok()
                .map(PathBuf::from),
        })
    }

    /// The CA file of Cassandra's TLS, or an error saying to restart the test
    /// bed (one started before TLS was configured has none).
    pub fn require_cql_ca_file(&self) -> Result<PathBuf, TestBedError> {
        self.cql_ca_file
            .clone()
            .ok_or(TestBedError::NotSet("LOTUS_FOLLOWER_TESTBED_CQL_CA_FILE (restart the test bed: `e2e/testbed down && e2e/testbed up`)"))
    }
}

fn var(name: &'static str) -> Result<String, TestBedError> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or(TestBedError::NotSet(name))
}
