//! A tipset's messages, as Lotus selects them (`BlockMsgsForTipset`): blocks in
//! tipset order, each block's BLS messages before its secp ones, a message seen
//! in an earlier block skipped, and a message skipped when its nonce is not its
//! sender's next. From the Hyperdrive upgrade on, once any sender in the tipset
//! is an ID address, senders are compared by ID address (resolved in the parent
//! state) — the state is read only then.

use std::collections::{HashMap, HashSet};

use cid::Cid;
use fvm_ipld_amt::Amtv0;
use fvm_ipld_blockstore::Blockstore;
use fvm_shared::address::{Address, Protocol};

use super::{
    Network, TipSet, TxMeta, cbor,
    message::{Message, SignedMessage},
    state::{StateError, StateTree},
};

/// A message as included in a tipset.
#[derive(Debug, Clone, PartialEq)]
pub struct IncludedMessage {
    pub cid: Cid,
    pub message: Message,
    /// The signed form, for secp messages (BLS signatures are aggregated).
    pub signed: Option<SignedMessage>,
    /// The sender as compared for nonces: robust or ID address (see module docs).
    pub sender: Address,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("messages of block {block} are not in the store ({what} {cid} missing)")]
    Missing {
        block: Cid,
        what: &'static str,
        cid: Cid,
    },
    #[error("cannot read the message lists of block {block}: {reason}")]
    Unreadable { block: Cid, reason: String },
    #[error("cannot resolve sender {sender} in the parent state: {reason}")]
    Sender { sender: String, reason: StateError },
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

/// The messages one block lists (`ChainGetBlockMessages`), by CID.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMessages {
    pub bls: Vec<(Cid, Message)>,
    pub secp: Vec<(Cid, SignedMessage)>,
}

/// The messages one block lists: BLS (unsigned) then secp (signed).
pub fn block_messages<BS: Blockstore>(
    store: &BS,
    block: &Cid,
    messages: &Cid,
) -> Result<BlockMessages, SelectionError> {
    let meta: TxMeta = load(store, block, "message list", messages)?;
    let bls = cids_of(store, block, &meta.bls_messages)?
        .into_iter()
        .map(|cid| Ok((cid, load(store, block, "message", &cid)?)))
        .collect::<Result<_, SelectionError>>()?;
    let secp = cids_of(store, block, &meta.secp_messages)?
        .into_iter()
        .map(|cid| Ok((cid, load(store, block, "signed message", &cid)?)))
        .collect::<Result<_, SelectionError>>()?;
    Ok(BlockMessages { bls, secp })
}

fn load<BS: Blockstore, T: serde::de::DeserializeOwned>(
    store: &BS,
    block: &Cid,
    what: &'static str,
    cid: &Cid,
) -> Result<T, SelectionError> {
    let bytes = store
        .get(cid)
        .map_err(|e| SelectionError::Unreadable {
            block: *block,
            reason: e.to_string(),
        })?
        .ok_or(SelectionError::Missing {
            block: *block,
            what,
            cid: *cid,
        })?;
    Ok(cbor::decode(cid, &bytes)?)
}

fn cids_of<BS: Blockstore>(
    store: &BS,
    block: &Cid,
    root: &Cid,
) -> Result<Vec<Cid>, SelectionError> {
    let unreadable = |e: fvm_ipld_amt::Error| SelectionError::Unreadable {
        block: *block,
        reason: e.to_string(),
    };
    let amt = Amtv0::<Cid, &BS>::load(root, store).map_err(unreadable)?;
    let mut cids = Vec::with_capacity(amt.count() as usize);
    amt.for_each(|_, cid| {
        cids.push(*cid);
        Ok(())
    })
    .map_err(unreadable)?;
    Ok(cids)
}

/// The tipset's messages in execution order (the order receipts follow).
pub fn tipset_messages<BS: Blockstore>(
    store: &BS,
    tipset: &TipSet,
    network: Network,
) -> Result<Vec<IncludedMessage>, SelectionError> {
    let mut selection = Selection {
        store,
        tipset,
        by_id: tipset.height() >= network.hyperdrive_height(),
        use_ids: false,
        state: None,
        next_nonce: HashMap::new(),
    };
    let mut seen = HashSet::new();
    let mut selected = Vec::new();
    for (block_cid, header) in tipset.blocks_with_cids() {
        let BlockMessages { bls, secp } = block_messages(store, block_cid, &header.messages)?;
        let candidates = bls
            .into_iter()
            .map(|(cid, message)| (cid, message, None))
            .chain(
                secp.into_iter()
                    .map(|(cid, signed)| (cid, signed.message.clone(), Some(signed))),
            );
        for (cid, message, signed) in candidates {
            if !seen.insert(cid) {
                continue;
            }
            if let Some(sender) = selection.select(&message)? {
                selected.push(IncludedMessage {
                    cid,
                    message,
                    signed,
                    sender,
                });
            }
        }
    }
    Ok(selected)
}

struct Selection<'a, BS> {
    store: &'a BS,
    tipset: &'a TipSet,
    /// At or after Hyperdrive.
    by_id: bool,
    /// An ID-address sender appeared: compare every sender by ID.
    use_ids: bool,
    state: Option<StateTree<&'a BS>>,
    next_nonce: HashMap<Address, u64>,
}

impl<BS: Blockstore> Selection<'_, BS> {
    /// The sender as compared, if the message is selected.
    fn select(&mut self, message: &Message) -> Result<Option<Address>, SelectionError> {
        let sender = if !self.by_id {
            message.from
        } else if self.use_ids {
            self.resolve(&message.from)?
        } else if message.from.protocol() != Protocol::ID {
            message.from
        } else {
            // The first ID sender: re-key everything applied so far by ID.
            self.use_ids = true;
            let applied: Vec<_> = self.next_nonce.drain().collect();
            for (robust, nonce) in applied {
                let id = self.resolve(&robust)?;
                self.next_nonce.insert(id, nonce);
            }
            self.resolve(&message.from)?
        };
        // The first message of a sender sets the expected nonce: a valid block
        // cannot start a sender at the wrong one.
        let next = self.next_nonce.entry(sender).or_insert(message.sequence);
        if *next != message.sequence {
            return Ok(None);
        }
        *next += 1;
        Ok(Some(sender))
    }

    fn resolve(&mut self, address: &Address) -> Result<Address, SelectionError> {
        let sender_error = |reason| SelectionError::Sender {
            sender: address.to_string(),
            reason,
        };
        if self.state.is_none() {
            self.state = Some(
                StateTree::load(self.store, &self.tipset.parent_state_root())
                    .map_err(sender_error)?,
            );
        }
        let state = self.state.as_ref().ok_or_else(|| {
            sender_error(StateError::MissingRoot(self.tipset.parent_state_root()))
        })?;
        let id = state
            .lookup_id(address)
            .map_err(sender_error)?
            .ok_or_else(|| sender_error(StateError::ActorNotFound(address.to_string())))?;
        Ok(Address::new_id(id))
    }
}
