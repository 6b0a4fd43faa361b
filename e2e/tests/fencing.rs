//! Fencing inside the database: an ingester deposed by one with a newer term
//! (a later holder of the Lease) can no longer move the head of the test bed's
//! Cassandra. The CQL backend reads nothing before its conditional update, so
//! the refusal comes from the lightweight transaction's own condition.

use std::sync::Arc;

use lotus_follower::{
    ingest::IngestError,
    store::{Store, StoreError, cql::CqlStore},
};
use lotus_follower_e2e::{DevnetLeader, TestBed, TestKeyspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_ingester_is_refused_by_the_database() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "fencing").await?;
        let options = bed.cql_store_options(&keyspace.name);
        let store: Arc<CqlStore> =
            Arc::new(tokio::task::spawn_blocking(move || CqlStore::connect(&options)).await??);
        let mut leader = DevnetLeader::start(20).await?;
        let deposed = leader.ingester(store.clone(), 1)?;
        let holder = leader.ingester(store.clone(), 2)?;
        let sync = |ingester: &Arc<lotus_follower::ingest::Ingester>| {
            let ingester = ingester.clone();
            tokio::task::spawn_blocking(move || ingester.sync_once())
        };

        leader.produce(2).await?;
        sync(&deposed).await??;
        // The Lease changes hands: the new holder writes with term 2.
        leader.produce(1).await?;
        sync(&holder).await??;
        let taken = store.head()?.ok_or_else(|| anyhow::anyhow!("no head"))?;
        anyhow::ensure!(taken.term == 2, "{taken:?}");

        // The deposed ingester starts a sync from the head as it is now (so
        // the version it expects is right) and writes the next tipset whole,
        // but its term is older: the database refuses its head.
        leader.produce(1).await?;
        let refused = sync(&deposed).await?;
        anyhow::ensure!(
            matches!(
                refused,
                Err(IngestError::Store(StoreError::StaleTerm {
                    current: 2,
                    attempted: 1
                }))
            ),
            "a deposed ingester's head was not refused as stale: {refused:?}"
        );
        anyhow::ensure!(
            store.head()? == Some(taken.clone()),
            "the refused update changed the head"
        );

        // The same conditional update, as the deposed writer sends it, on the
        // database directly: not applied, and the answer names the newer term.
        let answer = admin
            .query_unpaged(
                format!(
                    "UPDATE {}.head SET height = ?, version = ?, term = ? WHERE id = 0 \
                     IF version = ? AND term <= ?",
                    keyspace.name
                ),
                (
                    taken.height + 1,
                    i64::try_from(taken.version + 1)?,
                    1i64,
                    i64::try_from(taken.version)?,
                    1i64,
                ),
            )
            .await?
            .into_rows_result()?;
        let (applied, _, term) = answer.first_row::<(bool, Option<i64>, Option<i64>)>()?;
        anyhow::ensure!(!applied && term == Some(2), "{applied} {term:?}");

        // The holder goes on.
        sync(&holder).await??;
        anyhow::ensure!(
            store.head()?.map(|head| head.tipset).as_ref() == Some(leader.devnet.head().key()),
            "the holder did not follow"
        );
        drop(store);
        keyspace.drop(&admin).await
    })
    .await
}
