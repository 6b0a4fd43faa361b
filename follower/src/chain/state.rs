//! State trees of versions 0–5 and the actor states the follower reads itself
//! (init and account). The follower executes nothing: it reads the state root a
//! tipset's blocks name.

use cid::Cid;
use fvm_ipld_blockstore::Blockstore;
use fvm_ipld_encoding::tuple::*;
use fvm_ipld_hamt::{BytesKey, Hamt, Hamtv0};
use fvm_shared::{
    ActorID,
    address::{Address, Payload},
    econ::TokenAmount,
    state::{StateRoot, StateTreeVersion},
};
use serde::{Serialize, de::DeserializeOwned};

use super::cbor;

/// Every HAMT of the state tree and of the builtin actors uses this bit width.
pub(crate) const HAMT_BIT_WIDTH: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state root {0} is not in the store")]
    MissingRoot(Cid),
    #[error("state of tree {root} is incomplete or unreadable: {reason}")]
    Tree { root: Cid, reason: String },
    #[error("actor {0} not found")]
    ActorNotFound(String),
    #[error("actor {address} has code {code}, not an {expected} actor")]
    WrongActor {
        address: String,
        code: Cid,
        expected: &'static str,
    },
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
    #[error("store error: {0}")]
    Store(String),
}

/// An actor's entry in the state tree, whatever the tree's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorState {
    pub code: Cid,
    /// The actor's own state (Lotus calls it `Head`).
    pub state: Cid,
    pub nonce: u64,
    pub balance: TokenAmount,
    /// The f4 address, from state tree version 5 on.
    pub delegated_address: Option<Address>,
}

/// An actor in Lotus JSON (`StateGetActor`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActorStateJson {
    pub code: super::json::CidJson,
    pub head: super::json::CidJson,
    pub nonce: u64,
    #[serde(with = "super::json::token_amount_string")]
    pub balance: TokenAmount,
    pub delegated_address: Option<String>,
}

impl ActorState {
    pub fn to_json(&self, network: super::Network) -> ActorStateJson {
        ActorStateJson {
            code: super::json::CidJson(self.code),
            head: super::json::CidJson(self.state),
            nonce: self.nonce,
            balance: self.balance.clone(),
            delegated_address: self
                .delegated_address
                .map(|address| network.format_address(&address)),
        }
    }
}

/// ActorState before state tree version 5: four fields.
#[derive(Debug, Clone, PartialEq, Serialize_tuple, Deserialize_tuple)]
pub(crate) struct ActorStateV4 {
    pub code: Cid,
    pub state: Cid,
    pub nonce: u64,
    pub balance: TokenAmount,
}

impl From<ActorStateV4> for ActorState {
    fn from(a: ActorStateV4) -> Self {
        Self {
            code: a.code,
            state: a.state,
            nonce: a.nonce,
            balance: a.balance,
            delegated_address: None,
        }
    }
}

impl From<fvm_shared::state::ActorState> for ActorState {
    fn from(a: fvm_shared::state::ActorState) -> Self {
        Self {
            code: a.code,
            state: a.state,
            nonce: a.sequence,
            balance: a.balance,
            delegated_address: a.delegated_address,
        }
    }
}

/// The state tree at one state root.
#[derive(Debug)]
pub struct StateTree<BS> {
    store: BS,
    root: Cid,
    version: StateTreeVersion,
    actors: Cid,
}

impl<BS: Blockstore> StateTree<BS> {
    /// Loads the root: a `StateRoot{Version, Actors, Info}` from version 1 on, the
    /// bare actors HAMT at version 0 (the mainnet and calibnet genesis).
    pub fn load(store: BS, root: &Cid) -> Result<Self, StateError> {
        let bytes = store
            .get(root)
            .map_err(|e| StateError::Store(e.to_string()))?
            .ok_or(StateError::MissingRoot(*root))?;
        let (version, actors) = match cbor::decode::<StateRoot>(root, &bytes) {
            Ok(state_root) => (state_root.version, state_root.actors),
            Err(_) => (StateTreeVersion::V0, *root),
        };
        Ok(Self {
            store,
            root: *root,
            version,
            actors,
        })
    }

    pub fn version(&self) -> StateTreeVersion {
        self.version
    }

    /// Versions 0 and 1 (actors v0–v2) use the legacy HAMT format, here and in
    /// the actors' own states.
    pub fn uses_legacy_hamt(&self) -> bool {
        matches!(self.version, StateTreeVersion::V0 | StateTreeVersion::V1)
    }

    fn tree_error(&self, error: impl ToString) -> StateError {
        StateError::Tree {
            root: self.root,
            reason: error.to_string(),
        }
    }

    /// A HAMT error: the store failing is an outage ([`StateError::Store`]),
    /// anything else a tree that is incomplete or malformed.
    fn hamt_error(&self, error: fvm_ipld_hamt::Error) -> StateError {
        match crate::store::hamt_store_failure(&error) {
            Some(reason) => StateError::Store(reason),
            None => self.tree_error(error),
        }
    }

    /// The actor with this ID, if it exists.
    pub fn get_actor(&self, id: ActorID) -> Result<Option<ActorState>, StateError> {
        let key = BytesKey(Address::new_id(id).to_bytes());
        Ok(match self.version {
            StateTreeVersion::V5 => self
                .hamt_get::<fvm_shared::state::ActorState>(&self.actors, &key)?
                .map(ActorState::from),
            _ => self
                .hamt_get::<ActorStateV4>(&self.actors, &key)?
                .map(ActorState::from),
        })
    }

    /// Every actor, by ID, in the HAMT's order.
    pub fn for_each_actor(&self, mut f: impl FnMut(ActorID, ActorState)) -> Result<(), StateError> {
        fn id_of(key: &BytesKey) -> anyhow::Result<ActorID> {
            Ok(Address::from_bytes(&key.0)?.id()?)
        }
        match self.version {
            StateTreeVersion::V5 => self.hamt_for_each(
                &self.actors,
                |key, actor: &fvm_shared::state::ActorState| {
                    f(id_of(key)?, actor.clone().into());
                    Ok(())
                },
            ),
            _ => self.hamt_for_each(&self.actors, |key, actor: &ActorStateV4| {
                f(id_of(key)?, actor.clone().into());
                Ok(())
            }),
        }
    }

    /// A value from a HAMT in this tree's format: the tree's own, or one inside an
    /// actor's state (such as the init actor's address map).
    pub fn hamt_get<V>(&self, root: &Cid, key: &BytesKey) -> Result<Option<V>, StateError>
    where
        V: DeserializeOwned + Serialize + Clone,
    {
        if self.uses_legacy_hamt() {
            Hamtv0::<&BS, V>::load_with_bit_width(root, &self.store, HAMT_BIT_WIDTH)
                .and_then(|hamt| hamt.get(key).map(|v| v.cloned()))
        } else {
            Hamt::<&BS, V>::load_with_bit_width(root, &self.store, HAMT_BIT_WIDTH)
                .and_then(|hamt| hamt.get(key).map(|v| v.cloned()))
        }
        .map_err(|e| self.hamt_error(e))
    }

    /// Every entry of a HAMT in this tree's format.
    pub fn hamt_for_each<V>(
        &self,
        root: &Cid,
        mut f: impl FnMut(&BytesKey, &V) -> anyhow::Result<()>,
    ) -> Result<(), StateError>
    where
        V: DeserializeOwned + Serialize,
    {
        if self.uses_legacy_hamt() {
            Hamtv0::<&BS, V>::load_with_bit_width(root, &self.store, HAMT_BIT_WIDTH)
                .and_then(|hamt| hamt.for_each(&mut f))
        } else {
            Hamt::<&BS, V>::load_with_bit_width(root, &self.store, HAMT_BIT_WIDTH)
                .and_then(|hamt| hamt.for_each(&mut f))
        }
        .map_err(|e| self.hamt_error(e))
    }

    /// An actor's own state, decoded.
    pub fn actor_state<T: DeserializeOwned>(&self, actor: &ActorState) -> Result<T, StateError> {
        let bytes = self
            .store
            .get(&actor.state)
            .map_err(|e| StateError::Store(e.to_string()))?
            .ok_or_else(|| {
                self.tree_error(format!("actor state {} is not in the store", actor.state))
            })?;
        Ok(cbor::decode(&actor.state, &bytes)?)
    }
}

/// The init actor's state (every actors version): the robust → ID address map,
/// the next ID, and the network's name.
#[derive(Debug, Clone, Serialize_tuple, Deserialize_tuple)]
pub struct InitState {
    pub address_map: Cid,
    pub next_id: ActorID,
    pub network_name: String,
}

/// The account actor's state: its key address (f1 or f3).
#[derive(Debug, Clone, Serialize_tuple, Deserialize_tuple)]
pub struct AccountState {
    pub address: Address,
}

/// The ID of the init actor (f01).
pub const INIT_ACTOR_ID: ActorID = 1;

impl<BS: Blockstore> StateTree<BS> {
    pub fn init_state(&self) -> Result<InitState, StateError> {
        let init = self
            .get_actor(INIT_ACTOR_ID)?
            .ok_or_else(|| StateError::ActorNotFound("f01 (init)".into()))?;
        self.actor_state(&init)
    }

    /// Resolves an address to its ID address: an ID address is itself; robust and
    /// delegated addresses go through the init actor's address map.
    pub fn lookup_id(&self, address: &Address) -> Result<Option<ActorID>, StateError> {
        if let Payload::ID(id) = address.payload() {
            return Ok(Some(*id));
        }
        let init = self.init_state()?;
        self.hamt_get::<ActorID>(&init.address_map, &BytesKey(address.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use fvm_ipld_blockstore::MemoryBlockstore;

    use super::*;
    use crate::chain::{network::parse_address, test_support::synthetic_state};

    const ROBUST: &str = "f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q";

    #[test]
    fn state_trees_of_every_version_load() -> anyhow::Result<()> {
        use StateTreeVersion::*;
        let robust = parse_address(ROBUST)?;
        for version in [V0, V1, V2, V3, V4, V5] {
            let store = MemoryBlockstore::new();
            let root = synthetic_state(&store, version, &[(robust, 100, 7)])?;
            let tree = StateTree::load(&store, &root)?;
            assert_eq!(tree.version(), version);
            assert_eq!(tree.uses_legacy_hamt(), matches!(version, V0 | V1));
            let account = tree.get_actor(100)?.expect("actor 100 exists");
            assert_eq!(
                (account.nonce, account.balance.clone()),
                (7, TokenAmount::from_atto(100))
            );
            assert_eq!(
                account.delegated_address.is_some(),
                version == V5,
                "{version:?}"
            );
            assert_eq!(tree.init_state()?.network_name, "synthetic");
            assert_eq!(tree.lookup_id(&robust)?, Some(100), "{version:?}");
            assert_eq!(tree.lookup_id(&Address::new_actor(b"unknown"))?, None);
            assert_eq!(tree.actor_state::<AccountState>(&account)?.address, robust);
            let mut ids = Vec::new();
            tree.for_each_actor(|id, _| ids.push(id))?;
            ids.sort();
            assert_eq!(ids, vec![1, 100]);
            assert!(tree.get_actor(5)?.is_none());
        }
        Ok(())
    }
}
