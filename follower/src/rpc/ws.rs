//! Websocket connections: the same calls as HTTP, plus Lotus's channels.
//! `ChainNotify` answers with a channel id, then pushes
//! `xrpc.ch.val [id, [HeadChange…]]` (first one `current`, later reverts before
//! applies); `xrpc.cancel [requestId]` ends it; on shutdown every channel gets
//! `xrpc.ch.close [id]`. A client that stops reading is disconnected once its
//! outbox is full, so a connection's memory stays bounded.

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::Response,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    Server,
    auth::Allowed,
    handle_body,
    methods::{ApiVersion, chain::head_changes},
    protocol::{RpcError, failure, normalize_method, parse_request, success},
};
use crate::chain::TipSetKey;

/// Messages queued for a client before it counts as not reading.
const OUTBOX: usize = 256;

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
        .on_upgrade(move |socket| connection(server, version, allowed, socket))
}

struct Channel {
    request_id: Value,
    task: JoinHandle<()>,
}

async fn connection(server: Arc<Server>, version: ApiVersion, allowed: Allowed, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut queued) = mpsc::channel::<Message>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut channels: HashMap<u64, Channel> = HashMap::new();
    let mut next_channel = 1u64;
    let mut shutdown = server.shutdown.clone();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => Bytes::from(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        channels.retain(|_, channel| !channel.task.is_finished());
        let reply = match channel_call(&text) {
            Some(ChannelCall::Notify(id)) => {
                if channels.len() >= server.limits.max_subscriptions {
                    let error = RpcError::limit(format!(
                        "over {} subscriptions on this connection",
                        server.limits.max_subscriptions
                    ));
                    Some(failure(&id, &error))
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
                    Some(success(&id, &channel))
                }
            }
            Some(ChannelCall::Cancel(request_id)) => {
                channels.retain(|channel_id, channel| {
                    if channel.request_id != request_id {
                        return true;
                    }
                    channel.task.abort();
                    let _ = outbox.try_send(close_message(*channel_id));
                    false
                });
                None
            }
            None => handle_body(&server, version, &allowed, &text, true).await,
        };
        if let Some(reply) = reply
            && outbox
                .try_send(Message::Text(reply.to_string().into()))
                .is_err()
        {
            tracing::info!("closing a websocket whose client does not read");
            break;
        }
    }
    for (channel_id, channel) in channels {
        channel.task.abort();
        let _ = outbox.try_send(close_message(channel_id));
    }
    drop(outbox);
    let _ = writer.await;
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

/// Pushes head changes on one channel until the connection or the head watch ends.
async fn notify(server: Arc<Server>, channel_id: u64, outbox: mpsc::Sender<Message>) {
    let mut head = server.head.clone();
    let mut last: Option<TipSetKey> = None;
    loop {
        let current = head.borrow_and_update().clone().map(|seen| seen.tipset);
        if let Some(current) = current
            && Some(&current) != last.as_ref()
        {
            let ctx = server.ctx.clone();
            let previous = last.clone();
            let key = current.clone();
            let changes = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
                let chain = ctx.chain();
                let to = chain.tipset(&key)?;
                Ok(match previous {
                    None => json!([{"Type": "current", "Val": to.to_json(ctx.network)}]),
                    Some(previous) => {
                        let from = chain.tipset(&previous)?;
                        let (reverts, applies) = chain.path(&from, &to)?;
                        head_changes(&ctx, &reverts, &applies)
                    }
                })
            })
            .await;
            match changes {
                Ok(Ok(changes)) => {
                    let message = json!({"jsonrpc": "2.0", "method": "xrpc.ch.val", "params": [channel_id, changes]});
                    if outbox
                        .try_send(Message::Text(message.to_string().into()))
                        .is_err()
                    {
                        return;
                    }
                    last = Some(current);
                }
                Ok(Err(error)) => tracing::warn!("ChainNotify: {error:#}"),
                Err(_) => return,
            }
        }
        if head.changed().await.is_err() {
            let _ = outbox.try_send(close_message(channel_id));
            return;
        }
    }
}
