//! `Chain*` methods: tipsets, blocks, messages and raw objects.

use base64::{Engine, engine::general_purpose::STANDARD};
use cid::Cid;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Context, WithoutThread, query_error, store_error, to_value};
use crate::{
    chain::{
        Message, SignedMessage, TipSet,
        cbor::{self, IDENTITY_HASH},
        json::CidJson,
        message::{MessageJson, message_cid, message_to_json},
        selection::IncludedMessage,
    },
    query::QueryError,
    rpc::{params::Params, protocol::RpcError},
    store::StoreBlockstore,
};
use fvm_ipld_blockstore::Blockstore;

fn tipset_json(ctx: &Context, tipset: &TipSet) -> Result<Value, RpcError> {
    to_value(tipset.to_json(ctx.network))
}

pub fn head(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    tipset_json(ctx, &ctx.chain().head().map_err(query_error)?)
}

pub fn get_tipset(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    tipset_json(ctx, &ctx.tipset(&params.tipset_key(0)?)?)
}

fn by_height(ctx: &Context, params: &[Value], after: bool) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let height = params.height(0)?;
    let anchor = ctx.tipset(&params.tipset_key(1)?)?;
    ctx.check_lookback(height)?;
    let chain = ctx.chain();
    let found = if after {
        chain.tipset_after_height(height, &anchor)
    } else {
        chain.tipset_by_height(height, &anchor)
    };
    tipset_json(ctx, &found.map_err(query_error)?)
}

pub fn tipset_by_height(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    by_height(ctx, params, false)
}

pub fn tipset_after_height(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    by_height(ctx, params, true)
}

pub fn get_block(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let block = ctx.chain().block(&params.cid(0)?).map_err(query_error)?;
    to_value(block.to_json(ctx.network))
}

pub fn block_messages(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let messages = ctx
        .chain()
        .block_messages(&params.cid(0)?)
        .map_err(query_error)?;
    let bls = messages
        .bls
        .iter()
        .map(|(_, message)| message_to_json(message, ctx.network))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RpcError::method)?;
    let secp = messages
        .secp
        .iter()
        .map(|(_, signed)| signed.to_json(ctx.network))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RpcError::method)?;
    let cids: Vec<CidJson> = messages
        .bls
        .iter()
        .map(|(cid, _)| CidJson(*cid))
        .chain(messages.secp.iter().map(|(cid, _)| CidJson(*cid)))
        .collect();
    Ok(json!({"BlsMessages": bls, "SecpkMessages": secp, "Cids": cids}))
}

/// Lotus's `api.Message`: the message's CID and its unsigned form.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CidMessage {
    cid: CidJson,
    message: MessageJson,
}

fn cid_messages(ctx: &Context, messages: &[IncludedMessage]) -> Result<Value, RpcError> {
    let list = messages
        .iter()
        .map(|included| {
            Ok(CidMessage {
                cid: CidJson(included.cid),
                message: message_to_json(&included.message, ctx.network)
                    .map_err(RpcError::method)?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    to_value(list)
}

pub fn parent_messages(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let messages = ctx
        .chain()
        .parent_messages(&params.cid(0)?)
        .map_err(query_error)?;
    cid_messages(ctx, &messages)
}

pub fn messages_in_tipset(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let tipset = ctx.tipset(&params.tipset_key(0)?)?;
    let messages = ctx.chain().tipset_messages(&tipset).map_err(query_error)?;
    cid_messages(ctx, &messages)
}

pub fn parent_receipts(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let receipts = ctx
        .chain()
        .parent_receipts(&params.cid(0)?)
        .map_err(query_error)?;
    to_value(
        receipts
            .iter()
            .map(|receipt| receipt.to_json())
            .collect::<Vec<_>>(),
    )
}

/// The raw bytes of a block, identity CIDs answered from the CID itself.
fn read(ctx: &Context, cid: &Cid) -> Result<Option<Vec<u8>>, RpcError> {
    StoreBlockstore(ctx.store.as_ref())
        .get(cid)
        .map_err(|error| match crate::store::store_failure(&error) {
            Some(reason) => store_error(crate::store::StoreError::Backend(reason)),
            None => RpcError::method(error),
        })
}

/// `ChainGetMessage`: an unsigned message, or a signed one's message.
pub fn get_message(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let cid = params.cid(0)?;
    let bytes = read(ctx, &cid)?.ok_or_else(|| {
        query_error(QueryError::NotInStore {
            what: "message",
            cid,
        })
    })?;
    let message = match cbor::decode::<Message>(&cid, &bytes) {
        Ok(message) => message,
        Err(_) => {
            cbor::decode::<SignedMessage>(&cid, &bytes)
                .map_err(RpcError::method)?
                .message
        }
    };
    let mut json = message_to_json(&message, ctx.network).map_err(RpcError::method)?;
    json.cid = Some(CidJson(message_cid(&message).map_err(RpcError::method)?));
    to_value(json)
}

pub fn read_obj(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let cid = params.cid(0)?;
    let bytes = read(ctx, &cid)?.ok_or_else(|| {
        query_error(QueryError::NotInStore {
            what: "object",
            cid,
        })
    })?;
    Ok(Value::String(STANDARD.encode(bytes)))
}

/// `ChainReadObj` awaiting the store's read (see [`super::AsyncHandler`]).
pub fn read_obj_without_thread(ctx: &Context, params: &[Value]) -> WithoutThread {
    let cid = match Params::new(params, 1, 1).and_then(|params| params.cid(0)) {
        Ok(cid) => cid,
        Err(error) => return WithoutThread::Answer(Box::pin(std::future::ready(Err(error)))),
    };
    // Identity CIDs are answered from the CID itself, by the handler.
    if cid.hash().code() == IDENTITY_HASH {
        return WithoutThread::Blocking;
    }
    let Some(read) = ctx.store.get_block_future(cid) else {
        return WithoutThread::Blocking;
    };
    WithoutThread::Answer(Box::pin(async move {
        let bytes = read.await.map_err(store_error)?.ok_or_else(|| {
            query_error(QueryError::NotInStore {
                what: "object",
                cid,
            })
        })?;
        Ok(Value::String(STANDARD.encode(bytes)))
    }))
}

pub fn has_obj(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let cid = params.cid(0)?;
    let present =
        cid.hash().code() == IDENTITY_HASH || ctx.store.has_block(&cid).map_err(store_error)?;
    Ok(Value::Bool(present))
}

pub fn genesis(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    tipset_json(ctx, &ctx.chain().genesis().map_err(query_error)?)
}

/// `ChainGetPath(from, to)`: reverts then applies, as `HeadChange`s.
pub fn path(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let from = ctx.tipset(&params.tipset_key(0)?)?;
    let to = ctx.tipset(&params.tipset_key(1)?)?;
    let (reverts, applies) = ctx.chain().path(&from, &to).map_err(query_error)?;
    Ok(head_changes(ctx, &reverts, &applies))
}

/// Lotus's `[]HeadChange`: reverts first, then applies.
pub fn head_changes(ctx: &Context, reverts: &[TipSet], applies: &[TipSet]) -> Value {
    let change =
        |kind: &str, tipset: &TipSet| json!({"Type": kind, "Val": tipset.to_json(ctx.network)});
    Value::Array(
        reverts
            .iter()
            .map(|tipset| change("revert", tipset))
            .chain(applies.iter().map(|tipset| change("apply", tipset)))
            .collect(),
    )
}
