//! The JSON-RPC server: HTTP POST and websocket on `/rpc/v0` and `/rpc/v1`,
//! health on `/health/livez` and `/health/readyz`, metrics on `/debug/metrics`
//! unless a separate metrics listener is configured. Requests are checked
//! against the limits before parsing; store work runs on blocking threads (the
//! store is synchronous), at most [`limits::STORE_WORKERS`] at once and each
//! within the request timeout; waiting (`StateWaitMsg`) happens on the head
//! watch, never on a thread. Every answer is a JSON-RPC response, never a hang.

pub mod auth;
pub mod feed;
pub mod limits;
pub mod methods;
pub mod params;
pub mod protocol;
mod ws;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use quick_cache::{Weighter, sync::Cache};
use serde_json::{Value, value::RawValue};
use tokio::{
    sync::{Semaphore, watch},
    time::Instant as Deadline,
};
use tokio_util::task::TaskTracker;

pub use self::limits::Limits;
use self::{
    auth::{Allowed, Auth},
    feed::HeadFeed,
    limits::{MethodLimits, STORE_WORKERS},
    methods::{ApiVersion, Context, Handler},
    protocol::{RpcError, failure, normalize_method, parse_request, success},
};
use crate::{chain::TipSetKey, metrics::Metrics};

/// The head as the watcher last saw it: the store's head version and tipset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenHead {
    pub version: u64,
    pub tipset: TipSetKey,
}

/// Serialized results of recent calls, valid for one head version: answers
/// depend only on content-addressed data and the head, so a new head simply
/// makes new keys and old entries age out.
pub type ResponseCache = Cache<ResponseKey, Arc<RawValue>, ResponseWeight>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResponseKey {
    version: ApiVersion,
    head: u64,
    method: &'static str,
    params: String,
}

#[derive(Debug, Clone)]
pub struct ResponseWeight;

impl Weighter<ResponseKey, Arc<RawValue>> for ResponseWeight {
    fn weight(&self, key: &ResponseKey, result: &Arc<RawValue>) -> u64 {
        (key.params.len() + result.get().len() + 64) as u64
    }
}

pub fn response_cache(capacity_bytes: u64) -> ResponseCache {
    Cache::with_weighter(
        (capacity_bytes / 4096).clamp(16, 1 << 20) as usize,
        capacity_bytes,
        ResponseWeight,
    )
}

/// Methods whose answer may change without the head changing.
const UNCACHEABLE: &[&str] = &[
    "Filecoin.StateWaitMsg",
    "Filecoin.MpoolPush",
    "Filecoin.MpoolGetNonce",
    "Filecoin.GasEstimateMessageGas",
];

/// What every connection shares.
#[derive(Debug)]
pub struct Server {
    pub ctx: Context,
    pub limits: Limits,
    pub metrics: Metrics,
    /// The head, as last seen in the store (updated by [`watch_head`]).
    pub head: watch::Receiver<Option<SeenHead>>,
    /// Becomes true when the server shuts down: channels close first.
    pub shutdown: watch::Receiver<bool>,
    pub responses: ResponseCache,
    /// Checks API tokens where write methods exist (the devnet); without it
    /// every caller may call every method served.
    pub auth: Option<Auth>,
    /// Per-method and wait limits.
    pub method_limits: MethodLimits,
    /// Store work in flight (see [`STORE_WORKERS`]).
    pub workers: Arc<Semaphore>,
    /// Head changes for ChainNotify, computed once for every subscriber.
    pub feed: HeadFeed,
    /// The websocket connections, so shutdown can wait for their closes.
    pub connections: TaskTracker,
    /// Metrics on `/debug/metrics` of the RPC listener (no separate listener).
    pub debug_metrics: bool,
}

impl Server {
    /// A server around `ctx`; the head feed's task is returned to be owned by
    /// the caller (it ends when `head`'s sender does).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: Context,
        limits: Limits,
        metrics: Metrics,
        head: watch::Receiver<Option<SeenHead>>,
        shutdown: watch::Receiver<bool>,
        responses: ResponseCache,
        auth: Option<Auth>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let names = methods::all(ApiVersion::V0, true).chain(methods::all(ApiVersion::V1, true));
        let method_limits = MethodLimits::new(names.map(|method| method.name), &limits);
        let (feed, feed_task) = HeadFeed::start(ctx.clone(), head.clone());
        let server = Self {
            ctx,
            limits,
            metrics,
            head,
            shutdown,
            responses,
            auth,
            method_limits,
            workers: Arc::new(Semaphore::new(STORE_WORKERS)),
            feed,
            connections: TaskTracker::new(),
            debug_metrics: false,
        };
        (server, feed_task)
    }
}

pub fn router(server: Arc<Server>) -> Router {
    let mut router = Router::new()
        .route("/rpc/v0", get(websocket_v0).post(http_v0))
        .route("/rpc/v1", get(websocket_v1).post(http_v1))
        .route("/health/livez", get(|| async { "ok" }))
        .route("/health/readyz", get(readyz));
    if server.debug_metrics {
        // As Lotus serves its metrics on the API port.
        router = router.route(
            "/debug/metrics",
            get(|State(server): State<Arc<Server>>| async move { server.metrics.render() }),
        );
    }
    router.with_state(server)
}

async fn http_v0(State(server): State<Arc<Server>>, headers: HeaderMap, body: Body) -> Response {
    http(server, ApiVersion::V0, &headers, body).await
}

async fn http_v1(State(server): State<Arc<Server>>, headers: HeaderMap, body: Body) -> Response {
    http(server, ApiVersion::V1, &headers, body).await
}

async fn websocket_v0(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    match permission(&server, &headers) {
        Ok(allowed) => ws::upgrade(server, ApiVersion::V0, allowed, upgrade),
        Err(response) => response,
    }
}

async fn websocket_v1(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    match permission(&server, &headers) {
        Ok(allowed) => ws::upgrade(server, ApiVersion::V1, allowed, upgrade),
        Err(response) => response,
    }
}

/// What the request's token allows; an invalid token is refused outright
/// (401), as Lotus does.
fn permission(server: &Server, headers: &HeaderMap) -> Result<Allowed, Response> {
    let Some(auth) = &server.auth else {
        return Ok(Allowed::all());
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    auth.check(header).map_err(|error| {
        let error = RpcError::new(protocol::INVALID_REQUEST, error.to_string());
        json_response(StatusCode::UNAUTHORIZED, failure(&Value::Null, &error))
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn http(
    server: Arc<Server>,
    version: ApiVersion,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let allowed = match permission(&server, headers) {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let bytes = match axum::body::to_bytes(body, server.limits.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = RpcError::limit(format!(
                "request body over {} bytes",
                server.limits.max_body_bytes
            ));
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, failure(&Value::Null, &error));
        }
    };
    match handle_body(&server, version, &allowed, &bytes, false).await {
        Some(response) => json_response(StatusCode::OK, response),
        // Only notifications: nothing to answer.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Answers one body: a request or a batch. `None` when every call was a notification.
pub async fn handle_body(
    server: &Server,
    version: ApiVersion,
    allowed: &Allowed,
    bytes: &Bytes,
    websocket: bool,
) -> Option<String> {
    if protocol::too_deep(bytes, server.limits.max_json_depth) {
        let error = RpcError::limit(format!(
            "JSON nested deeper than {}",
            server.limits.max_json_depth
        ));
        return Some(failure(&Value::Null, &error));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => {
            return Some(failure(
                &Value::Null,
                &RpcError::new(protocol::PARSE_ERROR, error.to_string()),
            ));
        }
    };
    match value {
        Value::Array(batch) => {
            if batch.is_empty() {
                return Some(failure(
                    &Value::Null,
                    &RpcError::new(protocol::INVALID_REQUEST, "empty batch"),
                ));
            }
            if batch.len() > server.limits.max_batch {
                let error = RpcError::limit(format!(
                    "batch of {} over the limit of {}",
                    batch.len(),
                    server.limits.max_batch
                ));
                return Some(failure(&Value::Null, &error));
            }
            // Concurrently: a batch of waits must not run one after another.
            let responses: Vec<String> = futures::future::join_all(
                batch
                    .into_iter()
                    .map(|request| handle_value(server, version, allowed, request, websocket)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            let total: usize = responses.iter().map(String::len).sum();
            if total > server.limits.max_response_bytes {
                let error = RpcError::limit(format!(
                    "the batch's answer of {total} bytes is over the limit of {} (--max-response-bytes)",
                    server.limits.max_response_bytes
                ));
                return Some(failure(&Value::Null, &error));
            }
            (!responses.is_empty()).then(|| format!("[{}]", responses.join(",")))
        }
        single => handle_value(server, version, allowed, single, websocket).await,
    }
}

async fn handle_value(
    server: &Server,
    version: ApiVersion,
    allowed: &Allowed,
    value: Value,
    websocket: bool,
) -> Option<String> {
    let request = match parse_request(value) {
        Ok(request) => request,
        Err((id, error)) => return Some(failure(&id, &error)),
    };
    let result = call(
        server,
        version,
        allowed,
        &request.method,
        request.params,
        websocket,
    )
    .await;
    let id = request.id?;
    Some(match result {
        Ok(result) => success(&id, &result),
        Err(error) => failure(&id, &error),
    })
}

/// Runs one method with metrics, from the response cache when the head has not
/// moved. Channel methods are the websocket's business.
pub async fn call(
    server: &Server,
    version: ApiVersion,
    allowed: &Allowed,
    method: &str,
    params: Vec<Value>,
    websocket: bool,
) -> Result<Arc<RawValue>, RpcError> {
    let name = normalize_method(method);
    let Some(entry) = methods::lookup(&server.ctx, version, &name) else {
        if name == "Filecoin.ChainNotify" && !websocket {
            return Err(RpcError::method(
                "ChainNotify is a channel method: call it over a websocket",
            ));
        }
        server
            .metrics
            .rpc_requests
            .with_label_values(&["unknown", &protocol::METHOD_NOT_FOUND.to_string()])
            .inc();
        return Err(RpcError::new(
            protocol::METHOD_NOT_FOUND,
            format!("method '{method}' not found"),
        ));
    };
    if !allowed.allows(entry.perm) {
        return Err(RpcError::new(
            protocol::METHOD_ERROR,
            format!(
                "missing permission to invoke '{}' (need '{}')",
                entry.name.trim_start_matches("Filecoin."),
                entry.perm.name()
            ),
        ));
    }
    let started = Instant::now();
    let result = admitted_call(server, version, entry, params).await;
    let code = result.as_ref().map_or_else(|error| error.code, |_| 0);
    server
        .metrics
        .rpc_requests
        .with_label_values(&[entry.name, &code.to_string()])
        .inc();
    server
        .metrics
        .rpc_duration
        .with_label_values(&[entry.name])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// A call within the method's concurrency limit: from the response cache when
/// the head has not moved, otherwise run (or, for waiting methods, waited for).
async fn admitted_call(
    server: &Server,
    version: ApiVersion,
    entry: &'static methods::Method,
    params: Vec<Value>,
) -> Result<Arc<RawValue>, RpcError> {
    let _admitted = server.method_limits.admit(entry.name, entry.waits)?;
    if entry.waits {
        return wait_call(server, entry, params).await;
    }
    let head = server.head.borrow().as_ref().map(|head| head.version);
    // With the cache off (a capacity of 0), no key is built for it.
    let cacheable = server.responses.capacity() > 0 && !UNCACHEABLE.contains(&entry.name);
    let key = match head {
        Some(head) if cacheable => Some(ResponseKey {
            version,
            head,
            method: entry.name,
            params: Value::Array(params.clone()).to_string(),
        }),
        _ => None,
    };
    if let Some(cached) = key.as_ref().and_then(|key| server.responses.get(key)) {
        return Ok(cached);
    }
    let deadline = Deadline::now() + server.limits.request_timeout;
    let without_thread = entry
        .without_thread
        .map(|handler| handler(&server.ctx, &params));
    let computed = match without_thread {
        Some(methods::WithoutThread::Answer(answer)) => {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(value) => {
                    value.and_then(|value| to_raw_within(&value, server.limits.max_response_bytes))
                }
                Err(_) => Err(timed_out(server, entry)),
            }
        }
        _ => run_blocking(server, entry, Arc::new(params), deadline).await,
    };
    if let (Some(key), Ok(result)) = (key, &computed) {
        server.responses.insert(key, result.clone());
    }
    computed
}

/// A waiting method (`StateWaitMsg`): its handler checks once and answers
/// `null` while the condition does not hold yet; it is checked again at each
/// head change, with no thread held in between, until it holds, the wait limit
/// passes, or the server shuts down.
async fn wait_call(
    server: &Server,
    entry: &'static methods::Method,
    params: Vec<Value>,
) -> Result<Arc<RawValue>, RpcError> {
    let params = Arc::new(params);
    let until = Deadline::now() + server.ctx.max_wait;
    let mut head = server.head.clone();
    let mut shutdown = server.shutdown.clone();
    loop {
        // Marked seen before checking, so a head change during the check
        // wakes the next wait instead of being missed.
        head.borrow_and_update();
        let check_deadline = (Deadline::now() + server.limits.request_timeout).min(until);
        let found = run_blocking(server, entry, params.clone(), check_deadline).await?;
        if found.get() != "null" {
            return Ok(found);
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return Err(shutting_down());
                }
            }
            _ = tokio::time::sleep_until(until) => {
                return Err(RpcError::method(format!(
                    "{} did not complete within {:?} (--max-wait-seconds)",
                    entry.name.trim_start_matches("Filecoin."),
                    server.ctx.max_wait
                )));
            }
            _ = shutdown.wait_for(|stop| *stop) => return Err(shutting_down()),
        }
    }
}

fn shutting_down() -> RpcError {
    RpcError::new(protocol::INTERNAL_ERROR, "the server is shutting down")
}

fn timed_out(server: &Server, entry: &methods::Method) -> RpcError {
    RpcError::new(
        protocol::TIMEOUT,
        format!(
            "{} did not finish within {:?} (--request-timeout)",
            entry.name.trim_start_matches("Filecoin."),
            server.limits.request_timeout
        ),
    )
}

/// A method's result as JSON, refused over the response size limit.
fn to_raw_within(value: &Value, max_bytes: usize) -> Result<Arc<RawValue>, RpcError> {
    let raw = serde_json::value::to_raw_value(value)
        .map_err(|error| RpcError::new(protocol::INTERNAL_ERROR, error.to_string()))?;
    if raw.get().len() > max_bytes {
        return Err(RpcError::limit(format!(
            "the result of {} bytes is over the limit of {max_bytes} (--max-response-bytes)",
            raw.get().len()
        )));
    }
    Ok(Arc::from(raw))
}

/// Runs a handler on a blocking thread, within the store-worker limit and the
/// deadline, and serializes its result within the response size limit. The
/// thread cannot be interrupted: on timeout the caller gets its error at once
/// and the worker slot is released when the store call returns (bounded by the
/// store's own request timeout).
async fn run_blocking(
    server: &Server,
    entry: &'static methods::Method,
    params: Arc<Vec<Value>>,
    deadline: Deadline,
) -> Result<Arc<RawValue>, RpcError> {
    let timed_out = || timed_out(server, entry);
    let worker = tokio::time::timeout_at(deadline, server.workers.clone().acquire_owned())
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| shutting_down())?;
    // No time left (the wait for a worker took it all): do not start work
    // whose answer nobody will wait for.
    if Deadline::now() >= deadline {
        return Err(timed_out());
    }
    let ctx = server.ctx.clone();
    let handler: Handler = entry.handler;
    let max_bytes = server.limits.max_response_bytes;
    let task = tokio::task::spawn_blocking(move || {
        let _worker = worker;
        to_raw_within(&handler(&ctx, &params)?, max_bytes)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(RpcError::new(
            protocol::INTERNAL_ERROR,
            "the method failed unexpectedly",
        )),
        Err(_) => Err(timed_out()),
    }
}

/// Ready while the store answers and its schema is one this build reads. A
/// stale head never fails it: lag shows in metrics, not in an emptied Service.
async fn readyz(State(server): State<Arc<Server>>) -> Response {
    // Not behind the store-worker limit: the probe must answer while clients
    // keep every worker busy. Bounded, so a hung store fails the probe.
    let store = server.ctx.store.clone();
    let check = tokio::time::timeout(
        READINESS_TIMEOUT,
        tokio::task::spawn_blocking(move || store.check_readable()),
    )
    .await;
    match check {
        Ok(Ok(Ok(_))) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Ok(Err(error))) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}\n")).into_response()
        }
        Ok(Err(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "store: the check failed\n").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: no answer within {READINESS_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

/// Kubernetes' default probe timeout is 1 s; answer before a longer one gives up.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls the store's head (every `interval`), publishing its tipset key and the
/// head metrics. Store errors are logged and retried: readers keep serving.
pub async fn watch_head(
    ctx: Context,
    metrics: Metrics,
    sender: watch::Sender<Option<SeenHead>>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_version = None;
    loop {
        let store = ctx.store.clone();
        let network = ctx.network;
        let polled = tokio::task::spawn_blocking(
            move || -> anyhow::Result<Option<(u64, TipSetKey, i64, u64)>> {
                let Some(head) = store.head()? else {
                    return Ok(None);
                };
                let tipset =
                    crate::query::Chain::new(store.as_ref(), network).tipset(&head.tipset)?;
                Ok(Some((
                    head.version,
                    head.tipset,
                    head.height,
                    tipset.timestamp(),
                )))
            },
        )
        .await;
        match polled {
            Ok(Ok(Some((version, key, height, timestamp)))) => {
                metrics.head_height.set(height);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default();
                metrics.head_lag_seconds.set(now - timestamp as f64);
                if last_version != Some(version) {
                    last_version = Some(version);
                    sender.send_replace(Some(SeenHead {
                        version,
                        tipset: key,
                    }));
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::warn!("cannot read the head: {error:#}"),
            Err(error) => tracing::warn!("head poll failed: {error}"),
        }
        if sender.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // Dropping the sender tells waits and the ChainNotify feed the
            // server is going away.
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
