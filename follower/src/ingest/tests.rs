//! The ingester following a devnet leader over its RPC: the follower's store
//! ends up answering exactly as the leader's, across reorgs and growing
//! tipsets; a gap too large is refused; a leader outage is survived.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    devnet::{Devnet, DevnetOptions},
    query::Chain,
    rpc::auth::Auth,
    serve::{RunningServer, ServeOptions, start},
    store::embedded::EmbeddedStore,
};

struct Bed {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    leader_store: Arc<EmbeddedStore>,
    devnet: Devnet,
    server: Option<RunningServer>,
    follower: Arc<EmbeddedStore>,
}

async fn serve_leader(
    devnet: &Devnet,
    store: Arc<EmbeddedStore>,
    listen: &str,
) -> anyhow::Result<RunningServer> {
    start(
        store,
        ServeOptions {
            block_delay_secs: devnet.block_secs(),
            listen: listen.parse()?,
            ..ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), Auth::random()?)
        },
    )
    .await
}

impl Bed {
    async fn new() -> anyhow::Result<Self> {
        let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
        let leader_store = Arc::new(EmbeddedStore::open(dirs.0.path())?);
        let devnet = Devnet::open(
            leader_store.clone(),
            DevnetOptions::default(),
            Some(1_700_000_000),
        )?;
        let server = serve_leader(&devnet, leader_store.clone(), "127.0.0.1:0").await?;
        let follower = Arc::new(EmbeddedStore::open(dirs.1.path())?);
        Ok(Self {
            _dirs: dirs,
            leader_store,
            devnet,
            server: Some(server),
            follower,
        })
    }

    fn leader_url(&self) -> String {
        let address = self
            .server
            .as_ref()
            .map(|s| s.rpc_address.to_string())
            .unwrap_or_default();
        format!("http://{address}/rpc/v1")
    }

    fn ingester(&self, max_gap: i64) -> Arc<Ingester> {
        Arc::new(Ingester::new(
            self.follower.clone(),
            Leader::new(&self.leader_url(), None, Duration::from_secs(5)),
            Network::Devnet,
            max_gap,
            1,
            crate::metrics::Metrics::new().unwrap_or_else(|error| panic!("metrics: {error}")),
        ))
    }

    fn produce(&mut self, heights: std::ops::RangeInclusive<i64>) -> anyhow::Result<()> {
        for height in heights {
            self.devnet.produce(height)?;
        }
        Ok(())
    }

    /// The follower's store answers like the leader's: same head, same tipset
    /// at every height, same actors at the head, same message positions.
    fn check_same(&self) -> anyhow::Result<()> {
        let leader = Chain::new(self.leader_store.as_ref(), Network::Devnet);
        let follower = Chain::new(self.follower.as_ref(), Network::Devnet);
        let (head, ours) = (leader.head()?, follower.head()?);
        anyhow::ensure!(head.key() == ours.key(), "heads differ");
        let mut tipset = head.clone();
        loop {
            let mine = follower.tipset_by_height(tipset.height(), &ours)?;
            anyhow::ensure!(
                mine.key() == tipset.key(),
                "tipsets at {} differ",
                tipset.height()
            );
            // Where each message of the chain sits in it, as the leader indexed it.
            // (The leader may also know tipsets the follower never saw, such as
            // a head before it grew; only the chain's own must agree.)
            let messages = crate::chain::selection::tipset_messages(
                &StoreBlockstore(self.leader_store.as_ref()),
                &tipset,
                Network::Devnet,
            )?;
            for included in messages {
                let on_chain = |store: &EmbeddedStore| -> anyhow::Result<Vec<_>> {
                    Ok(store
                        .inclusions(&included.cid)?
                        .into_iter()
                        .filter(|inclusion| inclusion.tipset == *tipset.key())
                        .collect())
                };
                let ours = on_chain(&self.follower)?;
                anyhow::ensure!(
                    !ours.is_empty() && ours == on_chain(&self.leader_store)?,
                    "message {} indexed differently",
                    included.cid
                );
            }
            if tipset.height() == 0 {
                break;
            }
            tipset = leader.parent(&tipset)?;
        }
        for index in 0..8 {
            let address = crate::devnet::keys::Account::derive(0, index)?.address;
            anyhow::ensure!(
                leader.actor(&address, &head)? == follower.actor(&address, &ours)?,
                "actor {address} differs"
            );
        }
        Ok(())
    }
}

async fn sync(ingester: &Arc<Ingester>) -> Result<Option<Synced>, IngestError> {
    let ingester = ingester.clone();
    tokio::task::spawn_blocking(move || ingester.sync_once())
        .await
        .unwrap_or_else(|error| panic!("sync panicked: {error}"))
}

/// Syncs until the follower's head is the devnet's: the leader's RPC notices a
/// new head within its poll interval (100 ms), so one sync may still see the old.
async fn sync_to(bed: &Bed, ingester: &Arc<Ingester>) -> anyhow::Result<Synced> {
    let target = bed.devnet.head().key().clone();
    let mut total = Synced {
        height: 0,
        tipsets: 0,
        objects: 0,
        rows: 0,
    };
    for _ in 0..50 {
        if let Some(synced) = sync(ingester).await? {
            total = Synced {
                height: synced.height,
                tipsets: total.tipsets + synced.tipsets,
                objects: total.objects + synced.objects,
                rows: total.rows + synced.rows,
            };
        }
        if bed.follower.head()?.map(|head| head.tipset) == Some(target.clone()) {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the follower did not reach the leader's head")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_store_answers_like_the_leader_across_forks() -> anyhow::Result<()> {
    let mut bed = Bed::new().await?;
    bed.produce(1..=12)?;
    let ingester = bed.ingester(2880);
    let synced = sync_to(&bed, &ingester).await?;
    println!("first sync: {synced:?}");
    assert_eq!(synced.height, 12);
    bed.check_same()?;
    assert_eq!(sync(&ingester).await?, None, "nothing new: nothing written");

    // More tipsets, a reorg and a growing head: the follower follows, and keeps
    // the abandoned branch too (readers anchored there still resolve it).
    bed.produce(13..=16)?;
    let abandoned = bed.devnet.head().clone();
    sync_to(&bed, &ingester).await?;
    assert!(bed.devnet.reorg(2)?);
    bed.produce(17..=17)?;
    bed.devnet.grow_head()?;
    let synced = sync_to(&bed, &ingester).await?;
    println!("after a reorg of depth 2 and a growing head: {synced:?}");
    bed.check_same()?;
    assert_eq!(
        bed.follower.tipset_key(abandoned.key())?.as_ref(),
        Some(abandoned.key())
    );
    assert_eq!(bed.follower.tipsets_at_height(abandoned.height())?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_beyond_max_gap_is_refused_with_advice() -> anyhow::Result<()> {
    let mut bed = Bed::new().await?;
    bed.produce(1..=10)?;
    let error = sync(&bed.ingester(5))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("more than 5 epochs") && error.contains("import"),
        "{error}"
    );
    assert!(bed.follower.head()?.is_none(), "nothing was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_outage_is_an_error_and_the_next_sync_recovers() -> anyhow::Result<()> {
    let mut bed = Bed::new().await?;
    bed.produce(1..=3)?;
    let ingester = bed.ingester(2880);
    sync_to(&bed, &ingester).await?;
    let address = bed
        .server
        .as_ref()
        .map(|s| s.rpc_address)
        .ok_or_else(|| anyhow::anyhow!("no server"))?;
    if let Some(server) = bed.server.take() {
        server.stop().await;
    }
    bed.produce(4..=6)?;
    let error = sync(&ingester)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    println!("leader down: {error}");
    assert!(error.contains("leader"), "{error}");
    bed.server =
        Some(serve_leader(&bed.devnet, bed.leader_store.clone(), &address.to_string()).await?);
    sync(&ingester).await?;
    bed.check_same()?;
    Ok(())
}

/// Without a Lease the ingester syncs one sync at a time and sees each to its
/// end (its outcome reported): a closed "leading" channel once cut every sync
/// short at its first step, leaving the syncs to overlap, unobserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lease_each_sync_runs_to_its_end_and_is_reported() -> anyhow::Result<()> {
    let mut bed = Bed::new().await?;
    bed.produce(1..=3)?;
    let ingester = bed.ingester(2880);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(
        ingester
            .clone()
            .run(Duration::from_millis(50), None, stopped),
    );
    let target = Some(bed.devnet.head().key().clone());
    for _ in 0..100 {
        if bed.follower.head()?.map(|head| head.tipset) == target
            && ingester.metrics.leader_connected.get() == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    running.await?;
    assert_eq!(bed.follower.head()?.map(|head| head.tipset), target);
    assert_eq!(
        ingester.metrics.leader_connected.get(),
        1,
        "no sync's outcome was ever observed"
    );
    Ok(())
}
