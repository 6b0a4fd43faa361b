//! `State*` and `WalletBalance`: actors and addresses at a tipset's parent state.

use serde_json::{Value, json};

use super::{Context, query_error, to_value};
use crate::{
    chain::state::StateError,
    query::QueryError,
    rpc::{params::Params, protocol::RpcError},
};

pub fn get_actor(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let address = params.address(0)?;
    let tipset = ctx.tipset(&params.tipset_key(1)?)?;
    let actor = ctx.chain().actor(&address, &tipset).map_err(query_error)?;
    to_value(actor.to_json(ctx.network))
}

/// The balance at the head; an address with no actor holds nothing, as in Lotus.
pub fn wallet_balance(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let address = params.address(0)?;
    let chain = ctx.chain();
    let head = chain.head().map_err(query_error)?;
    match chain.actor(&address, &head) {
        Ok(actor) => Ok(Value::String(actor.balance.atto().to_string())),
        Err(QueryError::State(StateError::ActorNotFound(_))) => Ok(Value::String("0".into())),
        Err(error) => Err(query_error(error)),
    }
}

pub fn lookup_id(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let address = params.address(0)?;
    let tipset = ctx.tipset(&params.tipset_key(1)?)?;
    let id = ctx
        .chain()
        .lookup_id(&address, &tipset)
        .map_err(query_error)?;
    Ok(Value::String(ctx.network.format_address(&id)))
}

pub fn account_key(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 2, 2)?;
    let address = params.address(0)?;
    let tipset = ctx.tipset(&params.tipset_key(1)?)?;
    let key = ctx
        .chain()
        .account_key(&address, &tipset)
        .map_err(query_error)?;
    Ok(Value::String(ctx.network.format_address(&key)))
}

/// The name in the init actor's state, which never changes: read at the head,
/// or at genesis when the head's state is not stored (a chain imported without
/// its recent state).
pub fn network_name(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    Ok(Value::String(read_network_name(ctx)?))
}

fn read_network_name(ctx: &Context) -> Result<String, RpcError> {
    let chain = ctx.chain();
    let head = chain.head().map_err(query_error)?;
    let name = match chain.network_name(&head) {
        Ok(name) => name,
        Err(QueryError::State(StateError::MissingRoot(_))) => {
            let genesis = chain.genesis().map_err(query_error)?;
            chain.network_name(&genesis).map_err(query_error)?
        }
        Err(error) => return Err(query_error(error)),
    };
    Ok(name)
}

/// The version the tipset's epoch runs under, by the upgrade schedule.
pub fn network_version(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    let params = Params::new(params, 1, 1)?;
    let tipset = ctx.tipset(&params.tipset_key(0)?)?;
    Ok(ctx.schedule.version_at(tipset.height()).into())
}

/// Lotus's build parameters for the network, its name from the state and its
/// genesis time from the genesis block.
pub fn network_params(ctx: &Context, params: &[Value]) -> Result<Value, RpcError> {
    Params::new(params, 0, 0)?;
    let network = ctx.network;
    let genesis = ctx.chain().genesis().map_err(query_error)?;
    Ok(json!({
        "NetworkName": read_network_name(ctx)?,
        "BlockDelaySecs": ctx.block_delay_secs,
        "ConsensusMinerMinPower": network.consensus_miner_min_power().to_string(),
        "PreCommitChallengeDelay": network.pre_commit_challenge_delay(),
        "ForkUpgradeParams": ctx.schedule.fork_upgrade_params(network),
        "Eip155ChainID": network.chain_id(),
        "GenesisTimestamp": genesis.timestamp(),
    }))
}
