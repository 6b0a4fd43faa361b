//! `Discover`: our own OpenRPC document, generated from the method tables, so
//! it lists exactly what this follower answers.

use serde_json::{Value, json};

use super::{ApiVersion, Context, all};
use crate::rpc::{params::Params, protocol::RpcError};

pub fn discover(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(document(ApiVersion::V1, ctx.pool.is_some()))
}

pub fn document(version: ApiVersion, pool: bool) -> Value {
    let methods: Vec<Value> = all(version, pool)
        .map(|method| {
            json!({
                "name": method.name,
                "params": method.params.iter().map(|name| json!({"name": name, "required": true, "schema": {}})).collect::<Vec<_>>(),
                "result": {"name": "result", "schema": {}},
            })
        })
        .chain(std::iter::once(json!({
            "name": "Filecoin.ChainNotify",
            "description": "websocket only: answers with a channel id, then pushes xrpc.ch.val [channelId, [HeadChange…]]",
            "params": [],
            "result": {"name": "channel", "schema": {"type": "integer"}},
        })))
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "Lotus follower RPC API",
            "version": format!("{} ({})", env!("CARGO_PKG_VERSION"), match version { ApiVersion::V0 => "v0", ApiVersion::V1 => "v1" }),
        },
        "methods": methods,
    })
}
