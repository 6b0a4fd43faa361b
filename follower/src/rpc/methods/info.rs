//! Node metadata: `Version`, `NetVersion`, `NetListening`, `Web3ClientVersion`,
//! `EthChainId`, `EthBlockNumber`.

use serde_json::{Value, json};

use super::{Context, query_error};
use crate::rpc::{params::Params, protocol::RpcError};

/// The Lotus API version this follower implements (Lotus's `FullAPIVersion1`, 2.3.0).
const API_VERSION: u64 = (2 << 16) | (3 << 8);

pub fn version(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(json!({
        "Version": format!("lotus-follower {}", env!("CARGO_PKG_VERSION")),
        "APIVersion": API_VERSION,
        "BlockDelay": ctx.block_delay_secs,
        "Agent": "lotus-follower",
    }))
}

pub fn net_version(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(Value::String(ctx.network.chain_id().to_string()))
}

pub fn net_listening(_ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(Value::Bool(true))
}

pub fn web3_client_version(_ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(Value::String(format!(
        "lotus-follower/{}",
        env!("CARGO_PKG_VERSION")
    )))
}

pub fn eth_chain_id(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(Value::String(format!("{:#x}", ctx.network.chain_id())))
}

/// The height of the head's first non-null parent, not the head's own.
pub fn eth_block_number(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    let chain = ctx.chain();
    let head = chain.head().map_err(query_error)?;
    let height = if head.height() == 0 {
        0
    } else {
        chain.parent(&head).map_err(query_error)?.height()
    };
    Ok(Value::String(format!("{height:#x}")))
}
