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
    /// The sender as compared for nonces: as written, or (after Hyperdrive, once
    /// any sender in the tipset is an ID address) its ID address.
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
    /// The store failed while reading them (an outage, not missing data).
    #[error("store unavailable: {0}")]
    Store(String),
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
        .map_err(|e| match crate::store::store_failure(&e) {
            Some(reason) => SelectionError::Store(reason),
            None => SelectionError::Unreadable {
                block: *block,
                reason: e.to_string(),
            },
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
    let unreadable = |e: fvm_ipld_amt::Error| match crate::store::amt_store_failure(&e) {
        Some(reason) => SelectionError::Store(reason),
        None => SelectionError::Unreadable {
            block: *block,
            reason: e.to_string(),
        },
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
    if selection.use_ids {
        // Messages selected before the switch name their sender as an ID too, so
        // one sender has one key in the nonce index.
        for included in &mut selected {
            if included.sender.protocol() != Protocol::ID {
                included.sender = selection.resolve(&included.sender)?;
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

#[cfg(test)]
mod tests {
    use fvm_ipld_blockstore::MemoryBlockstore;
    use fvm_ipld_encoding::RawBytes;
    use fvm_shared::{crypto::signature::Signature, econ::TokenAmount, state::StateTreeVersion};

    use super::*;
    use crate::chain::{
        message::message_cid,
        test_support::{header, synthetic_state, tx_meta},
    };

    fn message(from: Address, nonce: u64) -> Message {
        Message {
            version: 0,
            from,
            to: Address::new_id(99),
            sequence: nonce,
            value: TokenAmount::from_atto(nonce),
            method_num: 0,
            params: RawBytes::default(),
            gas_limit: 1_000_000,
            gas_fee_cap: TokenAmount::from_atto(100),
            gas_premium: TokenAmount::from_atto(1),
        }
    }

    fn signed(from: Address, nonce: u64) -> SignedMessage {
        SignedMessage {
            message: message(from, nonce),
            signature: Signature::new_secp256k1(vec![7; 65]),
        }
    }

    /// A two-block tipset at `height` whose first block (in ticket order) lists
    /// `first` and whose second lists `second`.
    fn tipset(
        store: &MemoryBlockstore,
        height: i64,
        state: Cid,
        first: (&[Message], &[SignedMessage]),
        second: (&[Message], &[SignedMessage]),
    ) -> anyhow::Result<TipSet> {
        use multihash_codetable::{Code, MultihashDigest};
        // Lotus orders blocks by the BLAKE2b-256 of their ticket.
        let mut tickets = [b"ticket a".to_vec(), b"ticket b".to_vec()];
        tickets.sort_by_key(|ticket| Code::Blake2b256.digest(ticket).digest().to_vec());
        let parents = vec![cbor::encode_block(&"parent")?.0];
        let a = header(
            &tickets[0],
            height,
            parents.clone(),
            state,
            tx_meta(store, first.0, first.1)?,
        )?;
        let b = header(
            &tickets[1],
            height,
            parents,
            state,
            tx_meta(store, second.0, second.1)?,
        )?;
        // Given in the "wrong" order on purpose: the tipset sorts them.
        Ok(TipSet::new(vec![b, a])?)
    }

    fn nonces(selected: &[IncludedMessage]) -> Vec<(Address, u64)> {
        selected
            .iter()
            .map(|m| (m.message.from, m.message.sequence))
            .collect()
    }

    #[test]
    fn follows_lotus_block_msgs_for_tipset() -> anyhow::Result<()> {
        let store = MemoryBlockstore::new();
        let alice = Address::new_secp256k1(&[1; 65])?;
        let bob = Address::new_secp256k1(&[2; 65])?;
        let state = synthetic_state(
            &store,
            StateTreeVersion::V0,
            &[(alice, 100, 0), (bob, 101, 0)],
        )?;
        let tipset = tipset(
            &store,
            10,
            state,
            (&[message(alice, 0)], &[signed(bob, 5), signed(alice, 1)]),
            // A duplicate of the first block's message, a nonce gap, then Bob's next.
            (&[message(alice, 0), message(alice, 3)], &[signed(bob, 6)]),
        )?;
        let selected = tipset_messages(&store, &tipset, Network::Calibnet)?;
        assert_eq!(
            nonces(&selected),
            vec![(alice, 0), (bob, 5), (alice, 1), (bob, 6)]
        );
        assert_eq!(
            selected[1].cid,
            signed(bob, 5).cid()?,
            "secp messages are named by their signed form"
        );
        assert_eq!(selected[0].cid, message_cid(&message(alice, 0))?);
        assert!(
            selected.iter().all(|m| m.sender == m.message.from),
            "before Hyperdrive senders compare as written"
        );
        Ok(())
    }

    #[test]
    fn compares_senders_by_id_once_an_id_sender_appears_after_hyperdrive() -> anyhow::Result<()> {
        let store = MemoryBlockstore::new();
        let alice = Address::new_secp256k1(&[1; 65])?;
        let alice_id = Address::new_id(100);
        let state = synthetic_state(&store, StateTreeVersion::V0, &[(alice, 100, 0)])?;
        // Alice's nonce 0 by robust address, then again by ID address.
        let blocks = (&[message(alice, 0)][..], &[][..]);
        let again = (&[message(alice_id, 0), message(alice_id, 1)][..], &[][..]);

        let before = tipset(&store, 100, state, blocks, again)?;
        let selected = tipset_messages(&store, &before, Network::Calibnet)?;
        assert_eq!(
            nonces(&selected),
            vec![(alice, 0), (alice_id, 0), (alice_id, 1)],
            "before Hyperdrive: two senders"
        );

        let after = tipset(&store, 500, state, blocks, again)?;
        let selected = tipset_messages(&store, &after, Network::Calibnet)?;
        assert_eq!(
            nonces(&selected),
            vec![(alice, 0), (alice_id, 1)],
            "after: one sender, nonce 0 taken"
        );
        assert!(selected.iter().all(|m| m.sender == alice_id));
        Ok(())
    }

    #[test]
    fn missing_messages_are_named() -> anyhow::Result<()> {
        let store = MemoryBlockstore::new();
        let state = synthetic_state(&store, StateTreeVersion::V0, &[])?;
        let missing = cbor::encode_block(&"not stored")?.0;
        let block = header(b"t", 1, vec![], state, missing)?;
        let tipset = TipSet::new(vec![block])?;
        let error =
            tipset_messages(&store, &tipset, Network::Mainnet).expect_err("no message list");
        assert!(error.to_string().contains("not in the store"), "{error}");
        Ok(())
    }
}
