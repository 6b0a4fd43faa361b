//! The CQL store backend against the test bed's Cassandra: the conformance
//! suite every backend passes (the embedded one runs it in `follower/`), each
//! check in a keyspace of its own.

use lotus_follower::{store::cql::CqlStore, store_conformance_tests};
use lotus_follower_e2e::{TestBed, TestKeyspace};

/// Drops the test's keyspace when the check ends.
struct Keyspace {
    bed: TestBed,
    keyspace: Option<TestKeyspace>,
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        let (Some(keyspace), bed) = (self.keyspace.take(), self.bed.clone()) else {
            return;
        };
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            tokio::runtime::Runtime::new()?
                .block_on(async { keyspace.drop(&bed.cql_superuser_session().await?).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test keyspace: {dropped:?}");
        }
    }
}

/// A store in a fresh keyspace, its tables created and no schema recorded yet
/// (as a new embedded store is).
fn open() -> anyhow::Result<(Keyspace, CqlStore)> {
    let bed = TestBed::from_env()?;
    let keyspace = tokio::runtime::Runtime::new()?.block_on(async {
        TestKeyspace::create(&bed.cql_superuser_session().await?, "store").await
    })?;
    let store = CqlStore::connect(&bed.cql_store_options(&keyspace.name))?;
    store.create_tables()?;
    Ok((
        Keyspace {
            bed,
            keyspace: Some(keyspace),
        },
        store,
    ))
}

store_conformance_tests!(open);
