//! A devnet leader in the test's own process (an embedded store, the RPC on an
//! ephemeral port of 127.0.0.1), and ingesters following it into a store.

use std::{sync::Arc, time::Duration};

use lotus_follower::{
    chain::Network,
    devnet::{Devnet, DevnetOptions},
    ingest::{Ingester, leader::Leader},
    metrics::Metrics,
    rpc::auth::Auth,
    serve::{RunningServer, ServeOptions, start},
    store::{Store, embedded::EmbeddedStore},
};

pub struct DevnetLeader {
    pub devnet: Devnet,
    pub url: String,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

impl DevnetLeader {
    /// A devnet changing `state_churn` actors per epoch, at genesis.
    pub async fn start(state_churn: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(EmbeddedStore::open(dir.path())?);
        let devnet = Devnet::open(
            store.clone(),
            DevnetOptions {
                state_churn,
                ..DevnetOptions::default()
            },
            Some(1_700_000_000),
        )?;
        let server = start(
            store,
            ServeOptions {
                block_delay_secs: devnet.block_secs(),
                listen: "127.0.0.1:0".parse()?,
                ..ServeOptions::local(Network::Devnet)
                    .leader(Arc::new(devnet.pool()), Auth::random()?)
            },
        )
        .await?;
        Ok(Self {
            devnet,
            url: format!("http://{}/rpc/v1", server.rpc_address),
            _server: server,
            _dir: dir,
        })
    }

    /// Produces the next `tipsets` tipsets on the head, and waits until the
    /// leader's RPC reports the new head (it polls for it every 100 ms).
    pub async fn produce(&mut self, tipsets: usize) -> anyhow::Result<()> {
        for _ in 0..tipsets {
            let next = self.devnet.head().height() + 1;
            self.devnet.produce(next)?;
        }
        let target = self.devnet.head().key().clone();
        let client = Leader::new(&self.url, None, Duration::from_secs(10));
        for _ in 0..200 {
            let reported = tokio::task::spawn_blocking({
                let client = client.clone();
                move || client.head()
            })
            .await??;
            if reported == target {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the leader's RPC never reported the devnet's head")
    }

    /// An ingester following this leader into `store`, writing with `term`.
    pub fn ingester(&self, store: Arc<dyn Store>, term: u64) -> anyhow::Result<Arc<Ingester>> {
        Ok(Arc::new(Ingester::new(
            store,
            Leader::new(&self.url, None, Duration::from_secs(10)),
            Network::Devnet,
            100_000,
            term,
            Metrics::new()?,
        )))
    }
}

impl std::fmt::Debug for DevnetLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetLeader")
            .field("url", &self.url)
            .finish()
    }
}
