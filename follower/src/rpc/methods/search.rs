//! Message search: `StateSearchMsg`, `StateWaitMsg` and (v0) `StateGetReceipt`.

use serde_json::{Value, json};

use super::{Context, query_error};
use crate::{
    chain::{TipSet, json::CidJson},
    query::MessageLookup,
    rpc::{params::Params, protocol::RpcError},
};

/// Lotus's `MsgLookup`: the executed tipset (where the receipt is), not the including one.
fn lookup_json(
    ctx: &Context,
    message: &cid::Cid,
    lookup: &MessageLookup,
) -> Result<Option<Value>, RpcError> {
    let Some(executed) = &lookup.executed else {
        // Included in the head: not executed yet.
        return Ok(None);
    };
    let receipt = lookup.receipt.as_ref().ok_or_else(|| {
        RpcError::method(format!(
            "receipts of tipset {} (where message {message} was executed) are not in the store",
            executed.key()
        ))
    })?;
    Ok(Some(json!({
        "Message": CidJson(*message),
        "Receipt": receipt.to_json(),
        "ReturnDec": null,
        "TipSet": executed.to_json(ctx.network).cids,
        "Height": executed.height(),
    })))
}

fn search(
    ctx: &Context,
    anchor: &TipSet,
    message: &cid::Cid,
    limit: Option<i64>,
) -> Result<Option<MessageLookup>, RpcError> {
    // The lookback cap bounds every search, whatever limit the client gives.
    let limit = Some(limit.map_or(ctx.max_lookback_epochs, |limit| {
        limit.min(ctx.max_lookback_epochs)
    }));
    ctx.chain()
        .search_message(message, anchor, limit)
        .map_err(query_error)
}

/// A search limit: -1 (Lotus's "no limit") or a non-negative number of epochs.
fn limit(params: &Params, index: usize) -> Result<Option<i64>, RpcError> {
    match params.decode::<Option<i64>>(index, "a lookback limit in epochs")? {
        None | Some(-1) => Ok(None),
        Some(limit) if limit >= 0 => Ok(Some(limit)),
        Some(limit) => Err(RpcError::invalid_params(format!(
            "limit {limit} must be -1 or non-negative"
        ))),
    }
}

/// v1: `StateSearchMsg(tipsetKey, message, limit, allowReplaced)`.
pub fn search_msg(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 4)?;
    let anchor = ctx.tipset(&params.tipset_key(0)?)?;
    let message = params.cid(1)?;
    let found = search(ctx, &anchor, &message, limit(&params, 2)?)?;
    Ok(match found {
        Some(lookup) => lookup_json(ctx, &message, &lookup)?.unwrap_or(Value::Null),
        None => Value::Null,
    })
}

/// v0: `StateSearchMsg(message)`, from the head.
pub fn search_msg_v0(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let message = Params::new(params, 1, 1)?.cid(0)?;
    search_msg(
        ctx,
        &[
            Value::Null,
            serde_json::to_value(CidJson(message)).unwrap_or_default(),
        ],
    )
}

/// The message's lookup once it was executed `confidence` epochs below the
/// head, `null` until then: the server calls this again at each head change
/// (the method is a waiting one), so no thread sleeps here.
fn wait(
    ctx: &Context,
    message: cid::Cid,
    confidence: i64,
    limit: Option<i64>,
) -> Result<Value, RpcError> {
    let head = ctx.chain().head().map_err(query_error)?;
    if let Some(lookup) = search(ctx, &head, &message, limit)?
        && let Some(executed) = &lookup.executed
        && head.height() - executed.height() >= confidence
        && let Some(json) = lookup_json(ctx, &message, &lookup)?
    {
        return Ok(json);
    }
    Ok(Value::Null)
}

/// `StateWaitMsg`: `(message, confidence)` on v0, plus `(limit, allowReplaced)` on v1.
fn wait_msg_with(ctx: &Context, params: &[Value], max_params: usize) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, max_params)?;
    let message = params.cid(0)?;
    let confidence = params.decode::<u64>(1, "a confidence in epochs")?;
    let limit = if max_params > 2 {
        limit(&params, 2)?
    } else {
        None
    };
    wait(
        ctx,
        message,
        i64::try_from(confidence).unwrap_or(i64::MAX),
        limit,
    )
}

/// v1: `StateWaitMsg(message, confidence, limit, allowReplaced)`.
pub fn wait_msg(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    wait_msg_with(ctx, params, 4)
}

/// v0: `StateWaitMsg(message, confidence)`.
pub fn wait_msg_v0(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    wait_msg_with(ctx, params, 2)
}

/// v0: `StateGetReceipt(message, tipsetKey)`: the receipt, or null.
pub fn get_receipt_v0(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let message = params.cid(0)?;
    let anchor = ctx.tipset(&params.tipset_key(1)?)?;
    Ok(match search(ctx, &anchor, &message, None)? {
        Some(lookup) => match lookup_json(ctx, &message, &lookup)? {
            Some(found) => found["Receipt"].clone(),
            None => Value::Null,
        },
        None => Value::Null,
    })
}
