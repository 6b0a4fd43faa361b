//! A leader's message pool (the devnet's): `MpoolPush`, `MpoolGetNonce`,
//! `GasEstimateMessageGas`. Served only where a pool is attached.

use fvm_shared::{address::Address, econ::TokenAmount};
use serde_json::{Value, json};

use super::{Context, to_value};
use crate::{
    chain::{
        SignedMessage,
        message::{MessageJson, SignedMessageJson, message_from_json, message_to_json},
    },
    rpc::{params::Params, protocol::RpcError},
};

/// What a leader offers besides the chain: a pool that takes signed messages
/// into later blocks.
pub trait MessagePool: Send + Sync + std::fmt::Debug {
    fn push(&self, message: SignedMessage) -> Result<(), String>;
    /// The nonce a new message from `address` should carry.
    fn next_nonce(&self, address: &Address) -> Result<u64, String>;
}

fn pool(ctx: &Context) -> Result<&dyn MessagePool, RpcError> {
    ctx.pool
        .as_deref()
        .ok_or_else(|| RpcError::method("this node has no message pool"))
}

pub fn push(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let json: SignedMessageJson = params.decode(0, "a signed message")?;
    let signed = SignedMessage {
        message: message_from_json(json.message).map_err(RpcError::invalid_params)?,
        signature: json
            .signature
            .try_into()
            .map_err(RpcError::invalid_params)?,
    };
    let cid = signed.cid().map_err(RpcError::method)?;
    pool(ctx)?.push(signed).map_err(RpcError::method)?;
    Ok(json!({"/": cid.to_string()}))
}

pub fn get_nonce(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let address = params.address(0)?;
    Ok(pool(ctx)?
        .next_nonce(&address)
        .map_err(RpcError::method)?
        .into())
}

/// The gas a plain transfer uses on the devnet, with headroom, and fee caps
/// well above its base fee: the fields a wallet leaves for the node to fill.
pub fn estimate_message_gas(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 3)?;
    let json: MessageJson = params.decode(0, "a message")?;
    params.tipset_key(2)?;
    let mut message = message_from_json(json).map_err(RpcError::invalid_params)?;
    pool(ctx)?;
    if message.gas_limit == 0 {
        message.gas_limit = 1_000_000;
    }
    if message.gas_premium.is_zero() {
        message.gas_premium = TokenAmount::from_atto(100_000);
    }
    if message.gas_fee_cap.is_zero() {
        message.gas_fee_cap = TokenAmount::from_atto(100_000_000);
    }
    to_value(message_to_json(&message, ctx.network).map_err(RpcError::method)?)
}
