//! The server's bounds (DESIGN.md, "Limits like lotus-gateway's"): what one
//! request, one method, one connection and the whole listener may take. Each is
//! answered with a JSON-RPC error (`LIMIT_EXCEEDED`) or, for connections, a
//! clean close; nothing queues without bound and nothing parks a thread.
//!
//! The per-call limits live here rather than in tower layers: a tower layer sees
//! HTTP requests, while these apply to each JSON-RPC call inside a batch or a
//! websocket, so they are built from tokio's primitives (semaphores, timeouts).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError},
};

use super::protocol::RpcError;

/// The request limits, each answered with a JSON-RPC error.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_json_depth: usize,
    pub max_subscriptions: usize,
    /// How long one call may take (StateWaitMsg waits are bounded by
    /// `--max-wait-seconds` instead; each of its checks by this).
    pub request_timeout: Duration,
    /// Calls of one method in flight at once; more are refused at once, so a
    /// flood of one expensive method cannot starve the others.
    pub max_concurrent_calls: usize,
    /// `StateWaitMsg` calls waiting at once. A waiting call holds no thread,
    /// only a task, so this may be far above `max_concurrent_calls`.
    pub max_waits: usize,
    /// Open connections (HTTP and websocket); one more is closed on accept.
    pub max_connections: usize,
    /// One call's serialized result (and a batch's answer) may not exceed this.
    pub max_response_bytes: usize,
    /// A websocket is pinged this often...
    pub ws_ping_interval: Duration,
    /// ...and closed when nothing (not even a pong) arrived for this long.
    pub ws_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 100,
            max_json_depth: 32,
            max_subscriptions: 16,
            request_timeout: Duration::from_secs(30),
            max_concurrent_calls: 256,
            max_waits: 10_000,
            max_connections: 10_000,
            max_response_bytes: 64 << 20,
            ws_ping_interval: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Threads that may run store work at once. Tokio's blocking pool has 512
/// threads; keeping calls well below that leaves room for the readiness check,
/// the head watcher and anything else that must never wait behind clients.
pub const STORE_WORKERS: usize = 256;

/// One semaphore per method name, made up front from the method tables, so
/// the hot path takes no lock.
#[derive(Debug)]
pub struct MethodLimits {
    per_method: HashMap<&'static str, Arc<Semaphore>>,
    limit: usize,
    waits: Arc<Semaphore>,
    max_waits: usize,
}

impl MethodLimits {
    pub fn new(names: impl IntoIterator<Item = &'static str>, limits: &Limits) -> Self {
        let per_method = names
            .into_iter()
            .map(|name| (name, Arc::new(Semaphore::new(limits.max_concurrent_calls))))
            .collect();
        Self {
            per_method,
            limit: limits.max_concurrent_calls,
            waits: Arc::new(Semaphore::new(limits.max_waits)),
            max_waits: limits.max_waits,
        }
    }

    /// A slot for one call of `method`, or the limit's error. Waiting methods
    /// count against the wait limit instead.
    pub fn admit(&self, method: &'static str, waits: bool) -> Result<Admitted, RpcError> {
        let (semaphore, limit) = if waits {
            (Some(&self.waits), self.max_waits)
        } else {
            (self.per_method.get(method), self.limit)
        };
        let Some(semaphore) = semaphore else {
            return Ok(Admitted { _permit: None });
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admitted {
                _permit: Some(permit),
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(RpcError::limit(
                format!("too many concurrent {method} calls (limit {limit}): retry later"),
            )),
        }
    }
}

/// Held while a call runs.
#[derive(Debug)]
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A TCP listener that keeps at most `max` connections open: a connection
/// over the cap is accepted and closed at once (the client sees a clean close,
/// not a hang in the kernel's backlog).
#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
}

impl CappedListener {
    pub fn new(listener: TcpListener, max: usize) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CountedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // As axum's own listener does: errors such as EMFILE are
                    // transient; back off instead of spinning.
                    tracing::debug!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        CountedStream {
                            stream,
                            _slot: slot,
                        },
                        address,
                    );
                }
                Err(_) => {
                    tracing::warn!(
                        %address,
                        "closing a connection over --max-connections ({})",
                        self.max
                    );
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection holding its slot until it closes (an upgraded websocket keeps
/// the stream, so it keeps the slot too).
#[derive(Debug)]
pub struct CountedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
