//! The write path under partial failure, against the test bed's Cassandra.
//! One INSERT into the `blocks` table fails (injected inside the CQL backend,
//! below the `Store` trait, while the batch's other rows go through, as a
//! database fails). Right after the failed write, and after the retry, every
//! stored block's subtree must be complete ("present ⇒ complete"), for the
//! ingester and for import.

use std::sync::Arc;

use lotus_follower::{
    chain::Network,
    import::import,
    store::{
        Store,
        cql::{CqlOptions, CqlStore},
    },
    testdata,
};
use lotus_follower_e2e::{DevnetLeader, TestBed, TestKeyspace, holes};

/// Connects outside the async runtime (the store runs one of its own).
async fn connect(options: CqlOptions) -> anyhow::Result<Arc<CqlStore>> {
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || CqlStore::connect(&options)).await??,
    ))
}

/// How many rows pass before the one that fails: the first row, and rows
/// deeper into a write, where parents and children interleave.
const FAULTS: [u64; 5] = [0, 3, 17, 60, 150];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ingest_write_leaves_no_stored_node_with_holes() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "ingest_fault").await?;
        // Churn: each tipset changes hundreds of state nodes, levels deep.
        let mut leader = DevnetLeader::start(300).await?;
        let store = connect(bed.cql_store_options(&keyspace.name)).await?;
        let ingester = leader.ingester(store.clone(), 1)?;
        let sync = || {
            let ingester = ingester.clone();
            tokio::task::spawn_blocking(move || ingester.sync_once())
        };
        let mut failed = 0;
        for after in FAULTS {
            leader.produce(2).await?;
            store.fail_one_block_write_after(after);
            let outcome = sync().await?;
            store.heal();
            if let Err(error) = &outcome {
                eprintln!("sync with a fault after {after} rows: {error}");
                failed += 1;
            }
            let found = holes(&admin, &keyspace.name, &store).await?;
            anyhow::ensure!(
                found.is_empty(),
                "after a write that failed at row {after}, {} stored blocks link to blocks \
                 not stored complete, e.g. {:?}",
                found.len(),
                &found[..found.len().min(3)]
            );
            sync().await??;
            let found = holes(&admin, &keyspace.name, &store).await?;
            anyhow::ensure!(
                found.is_empty(),
                "after the retry of a write that failed at row {after}, {} stored blocks link \
                 to blocks not stored complete, e.g. {:?}",
                found.len(),
                &found[..found.len().min(3)]
            );
            let head = store.head()?.map(|head| head.tipset);
            anyhow::ensure!(
                head.as_ref() == Some(leader.devnet.head().key()),
                "the head did not follow"
            );
        }
        anyhow::ensure!(failed > 0, "no injected fault hit a write");
        drop(store);
        keyspace.drop(&admin).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_leaves_no_stored_node_with_holes() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let car = testdata::path("chains/export40.car")?
        .ok_or_else(|| {
            anyhow::anyhow!("chains/export40.car is missing: set LOTUS_FOLLOWER_TEST_DATA")
        })?
        .to_string_lossy()
        .into_owned();
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        for after in FAULTS {
            let keyspace = TestKeyspace::create(&admin, "import_fault").await?;
            let store = connect(bed.cql_store_options(&keyspace.name)).await?;
            store.fail_one_block_write_after(after);
            let imported = tokio::task::spawn_blocking({
                let (store, car) = (store.clone(), car.clone());
                move || import(store.as_ref(), &car, Network::Mainnet, &mut |_| {})
            })
            .await?;
            store.heal();
            anyhow::ensure!(
                imported.is_err(),
                "the import with a fault after {after} rows succeeded"
            );
            let found = holes(&admin, &keyspace.name, &store).await?;
            anyhow::ensure!(
                found.is_empty(),
                "after an import that failed at row {after}, {} stored blocks link to blocks \
                 not stored complete, e.g. {:?}",
                found.len(),
                &found[..found.len().min(3)]
            );
            let report = tokio::task::spawn_blocking({
                let (store, car) = (store.clone(), car.clone());
                move || import(store.as_ref(), &car, Network::Mainnet, &mut |_| {})
            })
            .await??;
            let found = holes(&admin, &keyspace.name, &store).await?;
            anyhow::ensure!(
                found.is_empty(),
                "after rerunning an import that failed at row {after}, {} stored blocks link \
                 to blocks not stored complete, e.g. {:?}",
                found.len(),
                &found[..found.len().min(3)]
            );
            anyhow::ensure!(
                report.complete_blocks > 0 && store.head()?.is_some(),
                "the rerun promoted nothing or set no head: {report:?}"
            );
            drop(store);
            keyspace.drop(&admin).await?;
        }
        Ok(())
    })
    .await
}
