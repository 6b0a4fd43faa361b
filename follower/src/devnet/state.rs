//! The devnet's state tree (version 5, the current one): its genesis, and the
//! only execution it does — value transfers that move balances and nonces and
//! create account actors for new key addresses.

use cid::Cid;
use fvm_ipld_blockstore::Blockstore;
use fvm_ipld_encoding::RawBytes;
use fvm_ipld_hamt::{BytesKey, Hamt};
use fvm_shared::{
    ActorID,
    address::{Address, Payload},
    econ::TokenAmount,
    error::ExitCode,
    state::{ActorState as ActorStateV5, StateInfo0, StateRoot, StateTreeVersion},
};

use super::overlay::Overlay;
use crate::chain::{
    Message, MessageReceipt,
    cbor::{self, identity_cid},
    state::{AccountState, HAMT_BIT_WIDTH, InitState},
};

/// The actors version whose names the devnet's code CIDs carry.
const ACTORS_VERSION: u32 = 18;
/// The devnet's network name, in its init actor's state.
pub const NETWORK_NAME: &str = "devnet";
/// Block producers are `f01000`…`f01004`; genesis accounts follow.
pub const FIRST_MINER: ActorID = 1000;
pub const MINERS: u64 = 5;
pub const FIRST_ACCOUNT: ActorID = FIRST_MINER + MINERS;
/// Gas every transfer is charged in its receipt (nothing is deducted).
pub const TRANSFER_GAS: u64 = 488_134;
const BURNT_FUNDS: ActorID = 99;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state tree: {0}")]
    Tree(String),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

fn tree_error(error: impl ToString) -> StateError {
    StateError::Tree(error.to_string())
}

/// A builtin actor's code CID, in the readable identity form (`fil/18/account`).
pub fn code(name: &str) -> Result<Cid, cbor::Error> {
    identity_cid(0x55, format!("fil/{ACTORS_VERSION}/{name}").as_bytes())
}

/// The state tree being changed, flushed into a new root at the end.
pub struct StateWriter<'o, 'a> {
    overlay: &'o Overlay<'a>,
    actors: Hamt<&'o Overlay<'a>, ActorStateV5>,
    init: InitState,
    addresses: Hamt<&'o Overlay<'a>, ActorID>,
    info: Cid,
}

impl std::fmt::Debug for StateWriter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("next_id", &self.init.next_id)
            .finish()
    }
}

fn key(id: ActorID) -> BytesKey {
    BytesKey(Address::new_id(id).to_bytes())
}

impl<'o, 'a> StateWriter<'o, 'a> {
    /// An empty tree: genesis fills it.
    fn empty(overlay: &'o Overlay<'a>) -> Result<Self, StateError> {
        let mut addresses = Hamt::new_with_bit_width(overlay, HAMT_BIT_WIDTH);
        let address_map = addresses.flush().map_err(tree_error)?;
        Ok(Self {
            overlay,
            actors: Hamt::new_with_bit_width(overlay, HAMT_BIT_WIDTH),
            init: InitState {
                address_map,
                next_id: FIRST_ACCOUNT,
                network_name: NETWORK_NAME.into(),
            },
            addresses,
            info: overlay.put(&StateInfo0::default())?,
        })
    }

    pub fn load(overlay: &'o Overlay<'a>, root: &Cid) -> Result<Self, StateError> {
        let state_root: StateRoot = get(overlay, root)?;
        let actors = Hamt::load_with_bit_width(&state_root.actors, overlay, HAMT_BIT_WIDTH)
            .map_err(tree_error)?;
        let init_actor: ActorStateV5 = actors
            .get(&key(crate::chain::state::INIT_ACTOR_ID))
            .map_err(tree_error)?
            .cloned()
            .ok_or_else(|| tree_error("no init actor"))?;
        let init: InitState = get(overlay, &init_actor.state)?;
        let addresses = Hamt::load_with_bit_width(&init.address_map, overlay, HAMT_BIT_WIDTH)
            .map_err(tree_error)?;
        Ok(Self {
            overlay,
            actors,
            init,
            addresses,
            info: state_root.info,
        })
    }

    pub fn actor(&self, id: ActorID) -> Result<Option<ActorStateV5>, StateError> {
        Ok(self.actors.get(&key(id)).map_err(tree_error)?.cloned())
    }

    /// The ID an address names, if its actor exists.
    pub fn lookup(&self, address: &Address) -> Result<Option<ActorID>, StateError> {
        if let Payload::ID(id) = address.payload() {
            return Ok(self.actor(*id)?.map(|_| *id));
        }
        Ok(self
            .addresses
            .get(&BytesKey(address.to_bytes()))
            .map_err(tree_error)?
            .copied())
    }

    fn set(&mut self, id: ActorID, actor: ActorStateV5) -> Result<(), StateError> {
        self.actors.set(key(id), actor).map_err(tree_error)?;
        Ok(())
    }

    fn create(
        &mut self,
        id: ActorID,
        name: &str,
        state: Cid,
        balance: TokenAmount,
    ) -> Result<(), StateError> {
        self.set(id, ActorStateV5::new(code(name)?, state, balance, 0, None))
    }

    /// A new account actor for a key address, with the next ID.
    fn create_account(
        &mut self,
        address: &Address,
        balance: TokenAmount,
    ) -> Result<ActorID, StateError> {
        let id = self.init.next_id;
        self.init.next_id += 1;
        self.addresses
            .set(BytesKey(address.to_bytes()), id)
            .map_err(tree_error)?;
        let state = self.overlay.put(&AccountState { address: *address })?;
        self.create(id, "account", state, balance)?;
        Ok(id)
    }

    /// Executes one message as a plain transfer and returns its receipt.
    pub fn apply(&mut self, message: &Message) -> Result<MessageReceipt, StateError> {
        let exit_code = self.transfer(message)?;
        Ok(MessageReceipt {
            exit_code,
            return_data: RawBytes::default(),
            gas_used: TRANSFER_GAS,
            events_root: Some(None),
        })
    }

    fn transfer(&mut self, message: &Message) -> Result<ExitCode, StateError> {
        let Some(from) = self.lookup(&message.from)? else {
            return Ok(ExitCode::SYS_SENDER_INVALID);
        };
        let Some(mut sender) = self.actor(from)? else {
            return Ok(ExitCode::SYS_SENDER_INVALID);
        };
        if sender.sequence != message.sequence {
            return Ok(ExitCode::SYS_SENDER_STATE_INVALID);
        }
        sender.sequence += 1;
        if sender.balance < message.value {
            self.set(from, sender)?;
            return Ok(ExitCode::SYS_INSUFFICIENT_FUNDS);
        }
        sender.balance -= &message.value;
        self.set(from, sender)?;
        match self.lookup(&message.to)? {
            Some(to) => {
                let mut receiver = self
                    .actor(to)?
                    .ok_or_else(|| tree_error("actor vanished"))?;
                receiver.balance += &message.value;
                self.set(to, receiver)?;
            }
            None if matches!(
                message.to.payload(),
                Payload::Secp256k1(_) | Payload::BLS(_)
            ) =>
            {
                self.create_account(&message.to, message.value.clone())?;
            }
            None => {
                // An unknown ID or actor address: the value goes nowhere, as a
                // failed send; refund it.
                let mut sender = self
                    .actor(from)?
                    .ok_or_else(|| tree_error("actor vanished"))?;
                sender.balance += &message.value;
                self.set(from, sender)?;
                return Ok(ExitCode::SYS_INVALID_RECEIVER);
            }
        }
        Ok(ExitCode::OK)
    }

    /// Writes the changed tree and returns its new root.
    pub fn flush(mut self) -> Result<Cid, StateError> {
        self.init.address_map = self.addresses.flush().map_err(tree_error)?;
        let init_state = self.overlay.put(&self.init)?;
        let init_id = crate::chain::state::INIT_ACTOR_ID;
        let mut init_actor = self
            .actor(init_id)?
            .ok_or_else(|| tree_error("no init actor"))?;
        init_actor.state = init_state;
        self.set(init_id, init_actor)?;
        let actors = self.actors.flush().map_err(tree_error)?;
        Ok(self.overlay.put(&StateRoot {
            version: StateTreeVersion::V5,
            actors,
            info: self.info,
        })?)
    }
}

fn get<T: serde::de::DeserializeOwned>(store: &Overlay<'_>, cid: &Cid) -> Result<T, StateError> {
    let bytes = store
        .get(cid)
        .map_err(tree_error)?
        .ok_or_else(|| tree_error(format!("block {cid} missing")))?;
    Ok(cbor::decode(cid, &bytes)?)
}

/// The genesis state: the singleton actors, the block producers, and one
/// account per address with `balance` each.
pub fn genesis(
    overlay: &Overlay<'_>,
    accounts: &[Address],
    balance: &TokenAmount,
) -> Result<Cid, StateError> {
    let mut tree = StateWriter::empty(overlay)?;
    // Singleton actors whose state the follower never reads: an empty CBOR list.
    let empty = overlay.put(&())?;
    let init = overlay.put(&tree.init)?;
    for (id, name) in [
        (0, "system"),
        (2, "reward"),
        (3, "cron"),
        (4, "storagepower"),
        (5, "storagemarket"),
        (6, "verifiedregistry"),
        (7, "datacap"),
        (10, "eam"),
    ] {
        tree.create(id, name, empty, TokenAmount::default())?;
    }
    let burnt = overlay.put(&AccountState {
        address: Address::new_id(BURNT_FUNDS),
    })?;
    tree.create(BURNT_FUNDS, "account", burnt, TokenAmount::default())?;
    tree.create(
        crate::chain::state::INIT_ACTOR_ID,
        "init",
        init,
        TokenAmount::default(),
    )?;
    for miner in FIRST_MINER..FIRST_ACCOUNT {
        tree.create(miner, "storageminer", empty, TokenAmount::default())?;
    }
    for address in accounts {
        tree.create_account(address, balance.clone())?;
    }
    tree.flush()
}
