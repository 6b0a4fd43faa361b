//! `lotus-follower serve`: the RPC listener, the metrics listener and the head
//! watcher around one store, started and stopped as a unit.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    chain::{Network, upgrades::Schedule},
    metrics::Metrics,
    rpc::{
        self, Limits, Server,
        auth::Auth,
        limits::CappedListener,
        methods::{Context, mpool::MessagePool},
    },
    store::{Store, StoreError, cached::CachedStore},
};

/// How often the head pointer is polled (DESIGN.md: at most 100 ms).
pub const HEAD_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub network: Network,
    pub schedule: Schedule,
    /// Seconds between epochs, as `Version` reports it.
    pub block_delay_secs: u64,
    pub listen: SocketAddr,
    /// The flag `listen` came from, for a bind error to name it.
    pub listen_flag: &'static str,
    /// A separate Prometheus listener (`/metrics`); without one, metrics are
    /// served on the RPC listener at `/debug/metrics`, as Lotus does.
    pub metrics_listen: Option<SocketAddr>,
    pub cache_bytes: u64,
    pub limits: Limits,
    pub max_lookback_epochs: i64,
    /// How long `StateWaitMsg` may wait.
    pub max_wait: Duration,
    /// How long shutdown waits for calls in flight before cutting them.
    pub shutdown_timeout: Duration,
    /// A leader's message pool (the devnet's), with the API-token secret
    /// guarding its write methods.
    pub pool: Option<(Arc<dyn MessagePool>, Auth)>,
}

impl ServeOptions {
    /// `network` served on an ephemeral port of 127.0.0.1, without a metrics
    /// listener, with the default limits: what tests and embedded uses start from.
    pub fn local(network: Network) -> Self {
        Self {
            network,
            schedule: Schedule::of(network),
            block_delay_secs: network.block_delay_secs(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_flag: "--listen",
            metrics_listen: None,
            cache_bytes: 16 << 20,
            limits: Limits::default(),
            max_lookback_epochs: 2880,
            max_wait: Duration::from_secs(1),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            pool: None,
        }
    }

    /// As a leader serves: any height (an ingester walks back from the head),
    /// and its message pool behind API tokens.
    pub fn leader(self, pool: Arc<dyn MessagePool>, auth: Auth) -> Self {
        Self {
            max_lookback_epochs: i64::MAX,
            pool: Some((pool, auth)),
            ..self
        }
    }
}

/// `--shutdown-timeout`'s default: well inside Kubernetes' default 30 s grace.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RunningServer {
    pub rpc_address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    server: Arc<Server>,
    shutdown_timeout: Duration,
    /// The head watcher and the ChainNotify feed: stopped last.
    background: Vec<JoinHandle<()>>,
    /// The listeners: drained on stop.
    listeners: Vec<JoinHandle<()>>,
}

/// Binds `address`, naming it and the flag it came from on failure (two
/// processes on one host otherwise die with a bare "Address already in use").
pub async fn bind(address: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address} ({flag}): {error}"))
}

pub async fn start(store: Arc<dyn Store>, options: ServeOptions) -> anyhow::Result<RunningServer> {
    // An empty store is served (readiness says why it is not ready); a schema
    // newer than this build understands is refused outright.
    if let Err(error @ StoreError::SchemaTooNew { .. }) = store.check_readable() {
        anyhow::bail!("{error}");
    }
    // Bound first: a taken port fails the start before anything runs.
    let listener = bind(options.listen, options.listen_flag).await?;
    let metrics_listener = match options.metrics_listen {
        Some(address) => Some(bind(address, "--metrics-listen").await?),
        None => None,
    };
    let metrics = Metrics::new()?;
    let cached: Arc<dyn Store> = Arc::new(CachedStore::new(
        store,
        options.cache_bytes,
        metrics.cache_hits.clone(),
        metrics.cache_misses.clone(),
    ));
    let ctx = Context {
        store: cached,
        network: options.network,
        schedule: Arc::new(options.schedule),
        block_delay_secs: options.block_delay_secs,
        max_lookback_epochs: options.max_lookback_epochs,
        max_wait: options.max_wait,
        pool: options.pool.as_ref().map(|(pool, _)| pool.clone()),
    };
    let (head_sender, head) = watch::channel(None);
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let (mut server, feed_task) = Server::new(
        ctx.clone(),
        options.limits,
        metrics.clone(),
        head,
        shutdown_receiver.clone(),
        rpc::response_cache(options.cache_bytes / 8),
        options.pool.map(|(_, auth)| auth),
    );
    server.debug_metrics = metrics_listener.is_none();
    let server = Arc::new(server);

    let background = vec![
        tokio::spawn(rpc::watch_head(
            ctx,
            metrics.clone(),
            head_sender,
            HEAD_POLL,
            shutdown_receiver.clone(),
        )),
        feed_task,
    ];
    let rpc_address = listener.local_addr()?;
    let app = rpc::router(server.clone());
    let mut stop = shutdown_receiver.clone();
    let capped = CappedListener::new(listener, options.limits.max_connections);
    let mut listeners = vec![tokio::spawn(async move {
        let serving = axum::serve(capped, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        if let Err(error) = serving.await {
            tracing::error!("RPC listener failed: {error}");
        }
    })];

    let metrics_address = match metrics_listener {
        Some(listener) => {
            let (bound, task) =
                crate::metrics::serve_on(listener, metrics, shutdown_receiver.clone())?;
            listeners.push(task);
            Some(bound)
        }
        None => None,
    };
    Ok(RunningServer {
        rpc_address,
        metrics_address,
        shutdown,
        server,
        shutdown_timeout: options.shutdown_timeout,
        background,
        listeners,
    })
}

impl RunningServer {
    /// Stops accepting, closes every channel (`xrpc.ch.close`), lets calls in
    /// flight finish (waits end at once with an error) for at most the
    /// shutdown timeout, then cuts what is left.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        self.server.connections.close();
        let drained = async {
            for task in self.listeners.iter_mut() {
                let _ = task.await;
            }
            self.server.connections.wait().await;
        };
        if tokio::time::timeout(self.shutdown_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "calls still in flight after {:?}: cutting them",
                self.shutdown_timeout
            );
            for task in &self.listeners {
                task.abort();
            }
        }
        for task in &self.background {
            task.abort();
        }
    }
}
