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
    pub metrics_listen: Option<SocketAddr>,
    pub cache_bytes: u64,
    pub limits: Limits,
    pub max_lookback_epochs: i64,
    /// How long `StateWaitMsg` may wait.
    pub max_wait: Duration,
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
            metrics_listen: None,
            cache_bytes: 16 << 20,
            limits: Limits::default(),
            max_lookback_epochs: 2880,
            max_wait: Duration::from_secs(1),
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

#[derive(Debug)]
pub struct RunningServer {
    pub rpc_address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub async fn start(store: Arc<dyn Store>, options: ServeOptions) -> anyhow::Result<RunningServer> {
    // An empty store is served (readiness says why it is not ready); a schema
    // newer than this build understands is refused outright.
    if let Err(error @ StoreError::SchemaTooNew { .. }) = store.check_readable() {
        anyhow::bail!("{error}");
    }
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
    let server = Arc::new(Server {
        ctx: ctx.clone(),
        limits: options.limits,
        metrics: metrics.clone(),
        head,
        shutdown: shutdown_receiver.clone(),
        responses: rpc::response_cache(options.cache_bytes / 8),
        auth: options.pool.map(|(_, auth)| auth),
    });

    let mut tasks = vec![tokio::spawn(rpc::watch_head(
        ctx,
        metrics.clone(),
        head_sender,
        HEAD_POLL,
    ))];
    let listener = TcpListener::bind(options.listen).await?;
    let rpc_address = listener.local_addr()?;
    let app = rpc::router(server);
    let mut stop = shutdown_receiver.clone();
    tasks.push(tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        if let Err(error) = serving.await {
            tracing::error!("RPC listener failed: {error}");
        }
    }));

    let metrics_address = match options.metrics_listen {
        Some(address) => {
            let (bound, task) =
                crate::metrics::serve(address, metrics, shutdown_receiver.clone()).await?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    Ok(RunningServer {
        rpc_address,
        metrics_address,
        shutdown,
        tasks,
    })
}

impl RunningServer {
    /// Closes every channel (`xrpc.ch.close`), stops accepting, and waits.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.into_iter().skip(1) {
            let _ = task.await;
        }
    }
}

/// Parses sizes like `512MiB`, `1GiB`, `100M` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" => 1_000,
        "KiB" | "Ki" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" | "Mi" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" | "Gi" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `30s`, `4s`, `2m` or a number of seconds.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    let number: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. 30s or 2m)"))?;
    if number == 0 {
        return Err(format!("duration {text:?} must be positive"));
    }
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_seconds, parse_size};

    #[test]
    fn durations_parse_in_seconds_or_minutes() {
        assert_eq!(parse_seconds("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("4"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_seconds("0s").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        // Kubernetes quantities, as the operator passes `cacheSize`.
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100M"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
