//! Websocket connections: the same calls as HTTP, plus Lotus's channels.
//! `ChainNotify` answers with a channel id, then pushes
//! `xrpc.ch.val [id, [HeadChange…]]` (first one `current`, later reverts before
//! applies); `xrpc.cancel [requestId]` ends a channel or an in-flight call; on
//! shutdown every channel gets `xrpc.ch.close [id]`.
//!
//! Calls run concurrently (a waiting call does not hold up the next request or
//! a cancel). A client that stops reading is disconnected once its outbox is
//! full, and one that sends nothing, not even a pong to our pings, for
//! `ws_idle_timeout` is closed, so a connection's memory and lifetime stay
//! bounded.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::Response,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    task::{AbortHandle, JoinHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    Server,
    auth::Allowed,
    feed::{self, HeadUpdate},
    handle_body,
    methods::ApiVersion,
    protocol::{RpcError, failure, normalize_method, parse_request, success},
};
use crate::chain::TipSetKey;

/// Messages queued for a client before it counts as not reading. Also the
/// most calls one connection may have in flight (each answers once).
const OUTBOX: usize = 256;

/// How long the writer may take to flush the last messages (the channel
/// closes) once the connection ends.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

pub fn upgrade(
    server: Arc<Server>,
    version: ApiVersion,
    allowed: Allowed,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = server.limits.max_body_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let connections = server.connections.clone();
            connections.track_future(connection(server, version, allowed, socket))
        })
}

struct Channel {
    request_id: Value,
    task: JoinHandle<()>,
}

/// The connection's way out: the queue to the writer, and the switch that
/// ends the connection when the queue is full.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::Sender<Message>,
    kill: CancellationToken,
}

impl Outbox {
    /// Queues a message; a full queue means the client does not read, and
    /// the connection is closed rather than the message silently dropped.
    fn send(&self, message: Message) -> bool {
        if self.queue.try_send(message).is_ok() {
            return true;
        }
        if !self.kill.is_cancelled() {
            tracing::info!("closing a websocket whose client does not read");
            self.kill.cancel();
        }
        false
    }

    fn text(&self, text: String) -> bool {
        self.send(Message::Text(text.into()))
    }
}

async fn connection(server: Arc<Server>, version: ApiVersion, allowed: Allowed, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (queue, mut queued) = mpsc::channel::<Message>(OUTBOX);
    let outbox = Outbox {
        queue,
        kill: CancellationToken::new(),
    };
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut channels: HashMap<u64, Channel> = HashMap::new();
    let mut calls: JoinSet<()> = JoinSet::new();
    let mut in_flight: HashMap<String, AbortHandle> = HashMap::new();
    let mut next_channel = 1u64;
    let mut shutdown = server.shutdown.clone();
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(
        Instant::now() + server.limits.ws_ping_interval,
        server.limits.ws_ping_interval,
    );
    let mut shutting_down = false;
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = shutdown.wait_for(|stop| *stop) => {
                shutting_down = true;
                break;
            }
            _ = outbox.kill.cancelled() => break,
            _ = ping.tick() => {
                if last_heard.elapsed() >= server.limits.ws_idle_timeout {
                    tracing::info!("closing a websocket idle for {:?}", last_heard.elapsed());
                    break;
                }
                outbox.send(Message::Ping(Bytes::new()));
                continue;
            }
            Some(_) = calls.join_next(), if !calls.is_empty() => continue,
        };
        last_heard = Instant::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => Bytes::from(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        channels.retain(|_, channel| !channel.task.is_finished());
        in_flight.retain(|_, call| !call.is_finished());
        match channel_call(&text) {
            Some(ChannelCall::Notify(id)) => {
                let reply = if channels.len() >= server.limits.max_subscriptions {
                    let error = RpcError::limit(format!(
                        "over {} subscriptions on this connection",
                        server.limits.max_subscriptions
                    ));
                    failure(&id, &error)
                } else {
                    let channel_id = next_channel;
                    next_channel += 1;
                    let task = tokio::spawn(notify(server.clone(), channel_id, outbox.clone()));
                    channels.insert(
                        channel_id,
                        Channel {
                            request_id: id.clone(),
                            task,
                        },
                    );
                    let channel = serde_json::value::to_raw_value(&channel_id).unwrap_or_default();
                    success(&id, &channel)
                };
                outbox.text(reply);
            }
            Some(ChannelCall::Cancel(request_id)) => {
                channels.retain(|channel_id, channel| {
                    if channel.request_id != request_id {
                        return true;
                    }
                    channel.task.abort();
                    outbox.send(close_message(*channel_id));
                    false
                });
                if let Some(call) = in_flight.remove(&request_id.to_string()) {
                    call.abort();
                }
            }
            None => {
                if calls.len() >= OUTBOX {
                    let error = RpcError::limit(format!(
                        "over {OUTBOX} calls in flight on this connection"
                    ));
                    outbox.text(failure(&request_id(&text), &error));
                    continue;
                }
                let (server, allowed, outbox) = (server.clone(), allowed.clone(), outbox.clone());
                let id = request_id(&text);
                let call = calls.spawn(async move {
                    if let Some(reply) = handle_body(&server, version, &allowed, &text, true).await
                    {
                        outbox.text(reply);
                    }
                });
                if !id.is_null() {
                    in_flight.insert(id.to_string(), call);
                }
            }
        }
    }
    calls.abort_all();
    for (channel_id, channel) in channels {
        channel.task.abort();
        // Only on a clean end: a client that does not read gets no more.
        if !outbox.kill.is_cancelled() {
            outbox.send(close_message(channel_id));
        }
    }
    if shutting_down {
        tracing::debug!("websocket closed for shutdown");
    }
    drop(outbox);
    // The writer ends once every sender is gone (the channel tasks were
    // aborted); bounded, since a client that stopped reading may never drain.
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_FLUSH, writer).await.is_err() {
        abort.abort();
    }
}

/// The id of a single request, to cancel it by (`null` for batches and
/// notifications, which cannot be cancelled one by one).
fn request_id(text: &[u8]) -> Value {
    serde_json::from_slice::<Value>(text)
        .ok()
        .and_then(|value| value.get("id").cloned())
        .unwrap_or(Value::Null)
}

enum ChannelCall {
    /// `ChainNotify`, with the request id to answer.
    Notify(Value),
    /// `xrpc.cancel` of the request with this id.
    Cancel(Value),
}

/// Recognises the channel calls, which only a websocket handles.
fn channel_call(text: &[u8]) -> Option<ChannelCall> {
    let request = parse_request(serde_json::from_slice(text).ok()?).ok()?;
    match normalize_method(&request.method).as_str() {
        "Filecoin.ChainNotify" => Some(ChannelCall::Notify(request.id.unwrap_or(Value::Null))),
        "xrpc.cancel" => request.params.into_iter().next().map(ChannelCall::Cancel),
        _ => None,
    }
}

fn close_message(channel_id: u64) -> Message {
    Message::Text(
        json!({"jsonrpc": "2.0", "method": "xrpc.ch.close", "params": [channel_id]})
            .to_string()
            .into(),
    )
}

fn value_message(channel_id: u64, changes: &Value) -> Message {
    Message::Text(
        json!({"jsonrpc": "2.0", "method": "xrpc.ch.val", "params": [channel_id, changes]})
            .to_string()
            .into(),
    )
}

/// Pushes head changes on one channel from the server's feed until the
/// connection or the feed ends.
async fn notify(server: Arc<Server>, channel_id: u64, outbox: Outbox) {
    let (latest, mut updates) = server.feed.subscribe();
    let first = match latest {
        Some(first) => first,
        None => match server.feed.first().await {
            Some(first) => first,
            None => {
                outbox.send(close_message(channel_id));
                return;
            }
        },
    };
    if !outbox.send(value_message(channel_id, &first.current)) {
        return;
    }
    let mut last: TipSetKey = first.to.clone();
    loop {
        let update: Arc<HeadUpdate> = match updates.recv().await {
            Ok(update) => update,
            // Missed some: the next update will not start where we are, and
            // is caught up below.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => {
                outbox.send(close_message(channel_id));
                return;
            }
        };
        if update.to == last {
            continue;
        }
        let sent = if update.from.as_ref() == Some(&last) {
            outbox.send(value_message(channel_id, &update.changes))
        } else {
            match feed::catch_up(&server.ctx, &last, &update.to).await {
                Ok(changes) => outbox.send(value_message(channel_id, &changes)),
                Err(error) => {
                    // Retried at the next update, from the same `last`.
                    tracing::warn!("ChainNotify: {error:#}");
                    continue;
                }
            }
        };
        if !sent {
            return;
        }
        last = update.to.clone();
    }
}
