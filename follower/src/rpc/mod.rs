//! The JSON-RPC server: HTTP POST and websocket on `/rpc/v0` and `/rpc/v1`,
//! health on `/health/livez` and `/health/readyz`. Requests are checked against
//! the limits before parsing; methods run on blocking threads (the store is
//! synchronous); every answer is a JSON-RPC response, never a hang.

pub mod auth;
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
use tokio::sync::watch;

use self::{
    auth::{Allowed, Auth},
    methods::{ApiVersion, Context},
    protocol::{RpcError, failure, normalize_method, parse_request, success},
};
use crate::{chain::TipSetKey, metrics::Metrics};

/// The request limits, each answered with a JSON-RPC error.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_json_depth: usize,
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 100,
            max_json_depth: 32,
            max_subscriptions: 16,
        }
    }
}

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
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/rpc/v0", get(websocket_v0).post(http_v0))
        .route("/rpc/v1", get(websocket_v1).post(http_v1))
        .route("/health/livez", get(|| async { "ok" }))
        .route("/health/readyz", get(readyz))
        .with_state(server)
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
            let mut responses = Vec::with_capacity(batch.len());
            for request in batch {
                if let Some(response) =
                    handle_value(server, version, allowed, request, websocket).await
                {
                    responses.push(response);
                }
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
    let head = server.head.borrow().as_ref().map(|head| head.version);
    let key = match head {
        Some(head) if !UNCACHEABLE.contains(&entry.name) => Some(ResponseKey {
            version,
            head,
            method: entry.name,
            params: Value::Array(params.clone()).to_string(),
        }),
        _ => None,
    };
    let cached = key.as_ref().and_then(|key| server.responses.get(key));
    let result = match cached {
        Some(result) => Ok(result),
        None => {
            let ctx = server.ctx.clone();
            let handler = entry.handler;
            let computed: Result<Arc<RawValue>, RpcError> =
                tokio::task::spawn_blocking(move || {
                    let value = handler(&ctx, &params)?;
                    serde_json::value::to_raw_value(&value)
                        .map(Arc::from)
                        .map_err(|error| RpcError::new(protocol::INTERNAL_ERROR, error.to_string()))
                })
                .await
                .unwrap_or_else(|_| {
                    Err(RpcError::new(
                        protocol::INTERNAL_ERROR,
                        "the method failed unexpectedly",
                    ))
                });
            if let (Some(key), Ok(result)) = (key, &computed) {
                server.responses.insert(key, result.clone());
            }
            computed
        }
    };
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

/// Ready while the store answers and its schema is one this build reads. A
/// stale head never fails it: lag shows in metrics, not in an emptied Service.
async fn readyz(State(server): State<Arc<Server>>) -> Response {
    let store = server.ctx.store.clone();
    let check = tokio::task::spawn_blocking(move || store.check_readable()).await;
    match check {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(error)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}\n")).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store: the check failed\n").into_response(),
    }
}

/// Polls the store's head (every `interval`), publishing its tipset key and the
/// head metrics. Store errors are logged and retried: readers keep serving.
pub async fn watch_head(
    ctx: Context,
    metrics: Metrics,
    sender: watch::Sender<Option<SeenHead>>,
    interval: Duration,
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
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
