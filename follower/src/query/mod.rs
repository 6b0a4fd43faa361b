//! What the RPC methods need from the store: tipsets by key and by height
//! relative to an anchor, messages and receipts, actors and addresses at a
//! tipset, and message search. Reads only; every answer is on the anchor's chain.

mod tipsets;

pub use tipsets::MessageLookup;

use cid::Cid;
use fvm_ipld_amt::Amtv0;
use fvm_shared::address::{Address, Payload};

use crate::{
    chain::{
        ActorState, BlockHeader, MessageReceipt, Network, StateTree, TipSet, TipSetKey,
        builtin::builtin_actor,
        cbor,
        selection::{self, BlockMessages, IncludedMessage, SelectionError},
        state::StateError,
    },
    import::{IndexError, load_tipset},
    store::{Store, StoreBlockstore, StoreError, amt_store_failure},
};

/// Lotus's EC finality: 900 epochs.
pub const FINALITY: i64 = 900;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the store has no head yet")]
    NoHead,
    #[error("tipset {0} is not in the store")]
    TipSetNotFound(TipSetKey),
    #[error("block {0} is not in the store")]
    BlockNotFound(Cid),
    #[error(
        "looking for tipset with height greater than start point (height {height} above anchor at {anchor})"
    )]
    HeightAboveAnchor { height: i64, anchor: i64 },
    #[error("the chain below height {0} is not in the store")]
    ChainNotInStore(i64),
    #[error("{what} {cid} is not in the store")]
    NotInStore { what: &'static str, cid: Cid },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

impl From<IndexError> for QueryError {
    fn from(error: IndexError) -> Self {
        match error {
            IndexError::Store(e) => QueryError::Store(e),
            IndexError::Cbor(e) => QueryError::Cbor(e),
            IndexError::Selection(e) => QueryError::Selection(e),
            other => QueryError::Invalid(other.to_string()),
        }
    }
}

impl QueryError {
    /// Whether the store could not be read (unreachable, timing out, refusing
    /// the role): an outage, never an answer about the chain. Judged by kind,
    /// never by text.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueryError::Store(error) => error.is_unavailable(),
            QueryError::State(StateError::Store(_))
            | QueryError::Selection(SelectionError::Store(_))
            | QueryError::Selection(SelectionError::Sender {
                reason: StateError::Store(_),
                ..
            }) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The chain as one store holds it, for one network.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    pub store: &'a dyn Store,
    pub network: Network,
}

impl<'a> Chain<'a> {
    pub fn new(store: &'a dyn Store, network: Network) -> Self {
        Self { store, network }
    }

    fn blockstore(&self) -> StoreBlockstore<'a, dyn Store + 'a> {
        StoreBlockstore(self.store)
    }

    pub fn head(&self) -> Result<TipSet> {
        let head = self.store.head()?.ok_or(QueryError::NoHead)?;
        self.load(&head.tipset)
    }

    /// The tipset with these blocks in any order; the empty key names the head.
    pub fn tipset(&self, key: &TipSetKey) -> Result<TipSet> {
        if key.is_empty() {
            return self.head();
        }
        let canonical = self.store.tipset_key(key)?.unwrap_or_else(|| key.clone());
        self.load(&canonical)
    }

    fn load(&self, key: &TipSetKey) -> Result<TipSet> {
        load_tipset(self.store, key)?.ok_or_else(|| QueryError::TipSetNotFound(key.clone()))
    }

    pub fn parent(&self, tipset: &TipSet) -> Result<TipSet> {
        if tipset.height() == 0 {
            return Err(QueryError::Invalid(
                "the genesis tipset has no parent".into(),
            ));
        }
        load_tipset(self.store, &tipset.parents())?
            .ok_or(QueryError::ChainNotInStore(tipset.height()))
    }

    pub fn genesis(&self) -> Result<TipSet> {
        self.tipset_by_height(0, &self.head()?)
    }

    pub fn block(&self, cid: &Cid) -> Result<BlockHeader> {
        let bytes = self
            .store
            .get_block(cid)?
            .ok_or(QueryError::BlockNotFound(*cid))?;
        Ok(cbor::decode(cid, &bytes)?)
    }

    pub fn state(&self, tipset: &TipSet) -> Result<StateTree<StoreBlockstore<'a, dyn Store + 'a>>> {
        Ok(StateTree::load(
            self.blockstore(),
            &tipset.parent_state_root(),
        )?)
    }

    /// The actor at this address in the tipset's parent state.
    pub fn actor(&self, address: &Address, tipset: &TipSet) -> Result<ActorState> {
        let state = self.state(tipset)?;
        let not_found = || StateError::ActorNotFound(self.network.format_address(address));
        let id = state.lookup_id(address)?.ok_or_else(not_found)?;
        Ok(state.get_actor(id)?.ok_or_else(not_found)?)
    }

    /// `StateLookupID`: the ID address of any address.
    pub fn lookup_id(&self, address: &Address, tipset: &TipSet) -> Result<Address> {
        let state = self.state(tipset)?;
        let id = state
            .lookup_id(address)?
            .ok_or_else(|| StateError::ActorNotFound(self.network.format_address(address)))?;
        Ok(Address::new_id(id))
    }

    /// `StateAccountKey`: an account's key address (f1/f3) or an actor's f4
    /// address; key addresses are their own. Other actors have none.
    pub fn account_key(&self, address: &Address, tipset: &TipSet) -> Result<Address> {
        if matches!(address.payload(), Payload::Secp256k1(_) | Payload::BLS(_)) {
            return Ok(*address);
        }
        let state = self.state(tipset)?;
        let actor = self.actor(address, tipset)?;
        if let Some(delegated) = actor.delegated_address {
            return Ok(delegated);
        }
        match builtin_actor(&actor.code) {
            Some(builtin) if builtin.name == "account" => Ok(state
                .actor_state::<crate::chain::state::AccountState>(&actor)?
                .address),
            _ => Err(QueryError::Invalid(format!(
                "address {} is not an account actor and has no key address",
                self.network.format_address(address)
            ))),
        }
    }

    /// `StateNetworkName`: from the init actor's state, never from configuration.
    pub fn network_name(&self, tipset: &TipSet) -> Result<String> {
        Ok(self.state(tipset)?.init_state()?.network_name)
    }

    /// A block's own messages: BLS then secp.
    pub fn block_messages(&self, block: &Cid) -> Result<BlockMessages> {
        let header = self.block(block)?;
        Ok(selection::block_messages(
            &self.blockstore(),
            block,
            &header.messages,
        )?)
    }

    /// The tipset's messages in execution order.
    pub fn tipset_messages(&self, tipset: &TipSet) -> Result<Vec<IncludedMessage>> {
        Ok(selection::tipset_messages(
            &self.blockstore(),
            tipset,
            self.network,
        )?)
    }

    /// The parent tipset's messages (`ChainGetParentMessages`), in execution order.
    pub fn parent_messages(&self, block: &Cid) -> Result<Vec<IncludedMessage>> {
        let header = self.block(block)?;
        if header.height == 0 {
            return Ok(Vec::new());
        }
        let parents = crate::chain::TipSetKey(header.parents);
        let parent =
            load_tipset(self.store, &parents)?.ok_or(QueryError::TipSetNotFound(parents))?;
        self.tipset_messages(&parent)
    }

    /// The messages a sender sent with this nonce that are on the anchor's chain
    /// (one, unless the chain is invalid), by CID with their tipset.
    pub fn messages_by_nonce(
        &self,
        sender: &Address,
        nonce: u64,
        anchor: &TipSet,
    ) -> Result<Vec<(Cid, TipSet)>> {
        let mut found = Vec::new();
        for used in self.store.nonce_uses(sender, nonce)? {
            let tipset = match self.tipset(&used.tipset) {
                Ok(tipset) => tipset,
                Err(QueryError::TipSetNotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            if self.is_on_chain(&tipset, anchor)? {
                found.push((used.message, tipset));
            }
        }
        Ok(found)
    }

    /// The receipts of the parent tipset's messages, in the same order.
    pub fn parent_receipts(&self, block: &Cid) -> Result<Vec<MessageReceipt>> {
        let header = self.block(block)?;
        let root = header.parent_message_receipts;
        // Absent receipts are "not in the store"; a store that fails is an
        // outage and must never read as absent (StateSearchMsg would answer
        // "no receipt").
        let missing = |error: fvm_ipld_amt::Error| match amt_store_failure(&error) {
            Some(reason) => QueryError::Store(StoreError::Backend(reason)),
            None => QueryError::NotInStore {
                what: "receipts",
                cid: root,
            },
        };
        let amt = Amtv0::<MessageReceipt, _>::load(&root, self.blockstore()).map_err(missing)?;
        let mut receipts = Vec::with_capacity(amt.count() as usize);
        amt.for_each(|_, receipt| {
            receipts.push(receipt.clone());
            Ok(())
        })
        .map_err(missing)?;
        Ok(receipts)
    }
}
