//! The operator's own metrics and its health endpoints, on one listener:
//! `/metrics` (Prometheus), `/livez`, `/readyz`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// Write requests by kind and verb (`apply`, `delete`, `status`): a no-op
    /// resync adds nothing here.
    pub writes: IntCounterVec,
    /// 1 while this instance holds the leader-election Lease.
    pub leader: IntGauge,
    /// Set once the API server answered: `/readyz` turns 200.
    pub ready: Arc<AtomicBool>,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "lotus_follower_operator_reconciles_total",
                "Reconciles of LotusFollowerCluster resources, by result.",
            ),
            &["result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "lotus_follower_operator_reconcile_duration_seconds",
                "Time spent in one reconcile.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["result"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "lotus_follower_operator_writes_total",
                "Write requests sent to the API server, by kind and verb.",
            ),
            &["kind", "verb"],
        )?;
        let leader = IntGauge::new(
            "lotus_follower_operator_leader",
            "1 while this instance holds the leader-election Lease.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            writes,
            leader,
            ready: Arc::default(),
        })
    }

    pub fn write(&self, kind: &str, verb: &str) {
        self.writes.with_label_values(&[kind, verb]).inc();
    }

    fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::warn!("encoding metrics: {error}");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Binds the listener now (so a bad address fails at start) and serves it until
/// `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move { m.render() }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Metrics>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api server not reached yet",
                    )
                }
            }),
        )
        .with_state(metrics);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("metrics listener: {error}");
        }
    });
    Ok((bound, task))
}
