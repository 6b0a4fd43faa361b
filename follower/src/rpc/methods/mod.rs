//! The method tables of `/rpc/v0` and `/rpc/v1`: one entry per method, one
//! file per family. Every handler is synchronous (the store is) and runs on a
//! blocking thread.

pub mod chain;
mod discover;
mod info;
pub mod mpool;
mod search;
mod state;

use std::sync::Arc;

use serde_json::Value;

use super::{auth::Perm, protocol::RpcError};
use crate::{
    chain::{Network, TipSet, TipSetKey, upgrades::Schedule},
    query::{Chain, QueryError},
    store::Store,
};

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    V0,
    V1,
}

/// Everything a handler may use.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    pub network: Network,
    /// The network's upgrade heights, with the operator's overrides.
    pub schedule: Arc<Schedule>,
    /// Seconds between epochs (`Version`, `StateGetNetworkParams`): the
    /// network's, or the devnet's `--block-time`.
    pub block_delay_secs: u64,
    /// Requests may look back at most this many epochs from the head.
    pub max_lookback_epochs: i64,
    /// How long `StateWaitMsg` waits on the head before answering with an error
    /// (the server does the waiting; see [`Method::waits`]).
    pub max_wait: std::time::Duration,
    /// A leader's message pool (the devnet's); followers have none.
    pub pool: Option<Arc<dyn mpool::MessagePool>>,
}

impl Context {
    pub fn chain(&self) -> Chain<'_> {
        Chain::new(self.store.as_ref(), self.network)
    }

    /// The tipset a key names (the head when empty), within the lookback cap.
    pub fn tipset(&self, key: &TipSetKey) -> Result<TipSet, RpcError> {
        let chain = self.chain();
        let tipset = chain.tipset(key).map_err(query_error)?;
        if !key.is_empty() {
            self.check_lookback(tipset.height())?;
        }
        Ok(tipset)
    }

    /// Refuses heights more than the lookback cap below the head, as
    /// lotus-gateway does.
    pub fn check_lookback(&self, height: i64) -> Result<(), RpcError> {
        let head = self.chain().head().map_err(query_error)?;
        if head.height().saturating_sub(height) > self.max_lookback_epochs {
            return Err(RpcError::limit(format!(
                "bad tipset height: lookbacks of more than {} epochs are disallowed (head is at {}, asked for {height})",
                self.max_lookback_epochs,
                head.height()
            )));
        }
        Ok(())
    }
}

/// A query's error as JSON-RPC: an outage gets its own code and says so, so a
/// client can tell "the store is down" from an answer about the chain.
pub fn query_error(error: QueryError) -> RpcError {
    if error.is_unavailable() {
        return RpcError::new(
            super::protocol::STORE_UNAVAILABLE,
            format!("store unavailable: {error}"),
        );
    }
    RpcError::method(error)
}

/// A store error as JSON-RPC (see [`query_error`]).
pub fn store_error(error: crate::store::StoreError) -> RpcError {
    query_error(QueryError::Store(error))
}

pub fn to_value<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value)
        .map_err(|error| RpcError::new(super::protocol::INTERNAL_ERROR, error.to_string()))
}

pub type Handler = fn(&Context, &[Value]) -> Result<Value, RpcError>;

/// A method's answer computed without a blocking thread, when it can be.
pub enum WithoutThread {
    /// The answer, as a future awaited on the server's runtime.
    Answer(futures::future::BoxFuture<'static, Result<Value, RpcError>>),
    /// Not this time (a local store): run the method's [`Handler`].
    Blocking,
}

impl std::fmt::Debug for WithoutThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WithoutThread::Answer(_) => "Answer",
            WithoutThread::Blocking => "Blocking",
        })
    }
}

/// The handler of a method that needs one store read at most: a networked
/// store's read is awaited as a request in flight, with no thread held (the
/// handoffs to and from a blocking thread would cost more than the read).
pub type AsyncHandler = fn(&Context, &[Value]) -> WithoutThread;

/// A method: its name, its params' names (for `Discover`), the permission a
/// caller needs, and its handler.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub perm: Perm,
    pub handler: Handler,
    /// The answer without a blocking thread, when the store allows it.
    pub without_thread: Option<AsyncHandler>,
    /// The handler checks a condition once, answering `null` until it holds;
    /// the server re-checks at each head change (`StateWaitMsg`) without
    /// holding a thread in between.
    pub waits: bool,
}

const fn method(name: &'static str, params: &'static [&'static str], handler: Handler) -> Method {
    Method {
        name,
        params,
        perm: Perm::Read,
        handler,
        without_thread: None,
        waits: false,
    }
}

/// A method with an [`AsyncHandler`] too.
const fn one_read(
    name: &'static str,
    params: &'static [&'static str],
    handler: Handler,
    without_thread: AsyncHandler,
) -> Method {
    Method {
        without_thread: Some(without_thread),
        ..method(name, params, handler)
    }
}

const fn waiting(name: &'static str, params: &'static [&'static str], handler: Handler) -> Method {
    Method {
        waits: true,
        ..method(name, params, handler)
    }
}

/// Methods whose signature is the same on both versions.
static COMMON: &[Method] = &[
    method("Filecoin.ChainHead", &[], chain::head),
    method("Filecoin.ChainGetTipSet", &["tipsetKey"], chain::get_tipset),
    method(
        "Filecoin.ChainGetTipSetByHeight",
        &["height", "tipsetKey"],
        chain::tipset_by_height,
    ),
    method(
        "Filecoin.ChainGetTipSetAfterHeight",
        &["height", "tipsetKey"],
        chain::tipset_after_height,
    ),
    method("Filecoin.ChainGetBlock", &["blockCid"], chain::get_block),
    method(
        "Filecoin.ChainGetBlockMessages",
        &["blockCid"],
        chain::block_messages,
    ),
    method(
        "Filecoin.ChainGetParentMessages",
        &["blockCid"],
        chain::parent_messages,
    ),
    method(
        "Filecoin.ChainGetParentReceipts",
        &["blockCid"],
        chain::parent_receipts,
    ),
    method(
        "Filecoin.ChainGetMessage",
        &["messageCid"],
        chain::get_message,
    ),
    method(
        "Filecoin.ChainGetMessagesInTipset",
        &["tipsetKey"],
        chain::messages_in_tipset,
    ),
    one_read(
        "Filecoin.ChainReadObj",
        &["cid"],
        chain::read_obj,
        chain::read_obj_without_thread,
    ),
    method("Filecoin.ChainHasObj", &["cid"], chain::has_obj),
    method("Filecoin.ChainGetGenesis", &[], chain::genesis),
    method("Filecoin.ChainGetPath", &["from", "to"], chain::path),
    method(
        "Filecoin.StateGetActor",
        &["address", "tipsetKey"],
        state::get_actor,
    ),
    method(
        "Filecoin.WalletBalance",
        &["address"],
        state::wallet_balance,
    ),
    method(
        "Filecoin.StateLookupID",
        &["address", "tipsetKey"],
        state::lookup_id,
    ),
    method(
        "Filecoin.StateAccountKey",
        &["address", "tipsetKey"],
        state::account_key,
    ),
    method("Filecoin.StateNetworkName", &[], state::network_name),
    method(
        "Filecoin.StateNetworkVersion",
        &["tipsetKey"],
        state::network_version,
    ),
    method("Filecoin.StateGetNetworkParams", &[], state::network_params),
    method("Filecoin.Version", &[], info::version),
    method("Filecoin.NetVersion", &[], info::net_version),
    method("Filecoin.NetListening", &[], info::net_listening),
    method("Filecoin.Web3ClientVersion", &[], info::web3_client_version),
    method("Filecoin.EthChainId", &[], info::eth_chain_id),
    method("Filecoin.EthBlockNumber", &[], info::eth_block_number),
    method("Filecoin.Discover", &[], discover::discover),
];

/// Methods whose v1 signature differs from v0's.
static V1_ONLY: &[Method] = &[
    method(
        "Filecoin.StateSearchMsg",
        &["tipsetKey", "messageCid", "limit", "allowReplaced"],
        search::search_msg,
    ),
    waiting(
        "Filecoin.StateWaitMsg",
        &["messageCid", "confidence", "limit", "allowReplaced"],
        search::wait_msg,
    ),
];

/// Lotus's v0 signatures, and methods only v0 has.
static V0_ONLY: &[Method] = &[
    method(
        "Filecoin.StateSearchMsg",
        &["messageCid"],
        search::search_msg_v0,
    ),
    waiting(
        "Filecoin.StateWaitMsg",
        &["messageCid", "confidence"],
        search::wait_msg_v0,
    ),
    method(
        "Filecoin.StateGetReceipt",
        &["messageCid", "tipsetKey"],
        search::get_receipt_v0,
    ),
];

/// A leader's message pool, on both versions where a pool is attached.
static POOL: &[Method] = &[
    Method {
        perm: Perm::Write,
        ..method("Filecoin.MpoolPush", &["signedMessage"], mpool::push)
    },
    method("Filecoin.MpoolGetNonce", &["address"], mpool::get_nonce),
    method(
        "Filecoin.GasEstimateMessageGas",
        &["message", "spec", "tipsetKey"],
        mpool::estimate_message_gas,
    ),
];

/// The tables of `version`, with the pool's methods when a pool is attached.
fn tables(version: ApiVersion, pool: bool) -> [&'static [Method]; 3] {
    let pool = if pool { POOL } else { &[] };
    match version {
        ApiVersion::V0 => [V0_ONLY, COMMON, pool],
        ApiVersion::V1 => [V1_ONLY, COMMON, pool],
    }
}

/// The handler for `name` on `version`, after alias normalisation.
pub fn lookup(ctx: &Context, version: ApiVersion, name: &str) -> Option<&'static Method> {
    tables(version, ctx.pool.is_some())
        .into_iter()
        .flatten()
        .find(|method| method.name == name)
}

/// Every method served on `version` (`Discover`), ChainNotify aside.
pub fn all(version: ApiVersion, pool: bool) -> impl Iterator<Item = &'static Method> {
    tables(version, pool).into_iter().flatten()
}
