//! The follower's Prometheus metrics (names from the interfaces crate, which
//! the operator's HPA and the chart's dashboard read too), in one
//! registry served on `--metrics-listen`, or at `/debug/metrics` on the RPC
//! listener when that flag is not given.

use lotus_follower_interfaces::metrics as names;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub rpc_requests: IntCounterVec,
    pub rpc_duration: HistogramVec,
    pub head_height: IntGauge,
    pub head_lag_seconds: Gauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// The ingester's: tipsets and blocks written, and whether the leader answered last time.
    pub ingest_tipsets: IntCounter,
    pub ingest_objects: IntCounter,
    pub leader_connected: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let rpc_requests = IntCounterVec::new(
            Opts::new(
                names::RPC_REQUESTS_TOTAL,
                "JSON-RPC calls answered, by method and result code (0: success)",
            ),
            &["method", "code"],
        )?;
        let rpc_duration = HistogramVec::new(
            HistogramOpts::new(
                names::RPC_REQUEST_DURATION_SECONDS,
                "Time to answer a JSON-RPC call",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method"],
        )?;
        let head_height = IntGauge::new(
            names::HEAD_HEIGHT,
            "Height of the head this follower serves",
        )?;
        let head_lag_seconds = Gauge::new(
            names::HEAD_LAG_SECONDS,
            "Wall clock minus the head tipset's timestamp",
        )?;
        let cache_hits = IntCounter::new(
            names::CACHE_HITS_TOTAL,
            "Blocks answered from the in-process cache",
        )?;
        let cache_misses =
            IntCounter::new(names::CACHE_MISSES_TOTAL, "Blocks read from the store")?;
        let ingest_tipsets = IntCounter::new(
            names::INGEST_TIPSETS_TOTAL,
            "Tipsets the ingester wrote to the store",
        )?;
        let ingest_objects = IntCounter::new(
            names::INGEST_OBJECTS_TOTAL,
            "Blocks the ingester wrote to the store",
        )?;
        let leader_connected = IntGauge::new(
            names::LEADER_CONNECTED,
            "1 when the leader answered the ingester's last call",
        )?;
        registry.register(Box::new(ingest_tipsets.clone()))?;
        registry.register(Box::new(ingest_objects.clone()))?;
        registry.register(Box::new(leader_connected.clone()))?;
        registry.register(Box::new(rpc_requests.clone()))?;
        registry.register(Box::new(rpc_duration.clone()))?;
        registry.register(Box::new(head_height.clone()))?;
        registry.register(Box::new(head_lag_seconds.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        Ok(Self {
            registry,
            rpc_requests,
            rpc_duration,
            head_height,
            head_lag_seconds,
            cache_hits,
            cache_misses,
            ingest_tipsets,
            ingest_objects,
            leader_connected,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Serves `/metrics` on `address` (named with its flag, `--metrics-listen`,
/// when it cannot be bound) until `stop` turns true.
pub async fn serve(
    address: std::net::SocketAddr,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = crate::serve::bind(address, "--metrics-listen").await?;
    serve_on(listener, metrics, stop)
}

/// Serves `/metrics` on a bound listener until `stop` turns true.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }),
    );
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        if let Err(error) = serving.await {
            tracing::error!("metrics listener failed: {error}");
        }
    });
    Ok((bound, task))
}
