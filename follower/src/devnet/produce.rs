//! Building tipsets in Lotus's formats: execute the parent's messages into a new
//! state root and receipts (legacy AMTs, as Lotus writes them), then 1–5 block
//! headers naming them, each with its own message lists. Pure apart from the
//! overlay the new blocks are written to.

use cid::Cid;
use fvm_ipld_amt::Amtv0;
use fvm_shared::{
    address::Address,
    bigint::BigInt,
    crypto::signature::{Signature, SignatureType},
    econ::TokenAmount,
    sector::{PoStProof, RegisteredPoStProof},
};

use super::{
    overlay::Overlay,
    state::{self, FIRST_MINER, StateWriter},
};
use crate::chain::{
    BlockHeader, Network, SignedMessage, TipSet, TxMeta,
    block::{BeaconEntry, ElectionProof, Ticket},
    cbor::{self, blake2b_256},
    selection::{SelectionError, tipset_messages},
    tipset::TipSetError,
};

/// Weight a tipset adds per block: the heavier branch is the one with more blocks.
const WEIGHT_PER_BLOCK: u64 = 256;
/// The base fee every block names (the devnet charges no gas).
const BASE_FEE: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    TipSet(#[from] TipSetError),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
    #[error("message list: {0}")]
    Amt(String),
}

/// One tipset to build: its height, how many blocks, the messages it
/// includes, and a salt that makes a competing branch's tickets differ.
#[derive(Debug, Clone)]
pub struct Draft {
    pub height: i64,
    pub blocks: usize,
    pub messages: Vec<SignedMessage>,
    pub salt: u64,
    pub timestamp: u64,
}

/// `n` pseudo-random bytes from a label: tickets, proofs and signatures that
/// have the real ones' shape and differ per block and branch.
fn noise(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u32;
    while out.len() < n {
        out.extend_from_slice(&blake2b_256(format!("{label}/{counter}").as_bytes()));
        counter += 1;
    }
    out.truncate(n);
    out
}

fn bls_signature(label: &str) -> Signature {
    Signature {
        sig_type: SignatureType::BLS,
        bytes: noise(label, 96),
    }
}

/// The tipset's weight as the devnet counts it (its blocks' `ParentWeight`
/// is the parent's).
pub fn weight(tipset: &TipSet) -> BigInt {
    let parent = tipset
        .blocks()
        .next()
        .map(|block| block.parent_weight.clone())
        .unwrap_or_default();
    parent + BigInt::from(WEIGHT_PER_BLOCK * tipset.blocks().count() as u64)
}

fn amt<T: serde::Serialize>(overlay: &Overlay<'_>, items: Vec<T>) -> Result<Cid, ProduceError> {
    Amtv0::new_from_iter(overlay, items).map_err(|error| ProduceError::Amt(error.to_string()))
}

/// Executes the parent's messages, in Lotus's selection order, on its parent
/// state: the state root and receipts its children name.
pub fn execute(overlay: &Overlay<'_>, parent: &TipSet) -> Result<(Cid, Cid), ProduceError> {
    let messages = tipset_messages(overlay, parent, Network::Devnet)?;
    let mut tree = StateWriter::load(overlay, &parent.parent_state_root())?;
    let mut receipts = Vec::with_capacity(messages.len());
    for included in &messages {
        receipts.push(tree.apply(&included.message)?);
    }
    let state = if messages.is_empty() {
        parent.parent_state_root()
    } else {
        tree.flush()?
    };
    Ok((state, amt(overlay, receipts)?))
}

fn header(
    draft: &Draft,
    index: usize,
    parents: Vec<Cid>,
    parent_weight: BigInt,
    state: Cid,
    receipts: Cid,
    messages: Cid,
) -> BlockHeader {
    let label = |what: &str| format!("{what}/{}/{index}/{}", draft.height, draft.salt);
    BlockHeader {
        miner: Address::new_id(FIRST_MINER + index as u64),
        ticket: Some(Ticket {
            vrf_proof: noise(&label("ticket"), 96),
        }),
        election_proof: Some(ElectionProof {
            win_count: 1,
            vrf_proof: noise(&label("election"), 96),
        }),
        beacon_entries: vec![BeaconEntry {
            round: draft.height.max(0) as u64,
            data: noise(&format!("beacon/{}", draft.height), 96),
        }],
        win_post_proof: vec![PoStProof {
            post_proof: RegisteredPoStProof::StackedDRGWinning2KiBV1,
            proof_bytes: noise(&label("post"), 192),
        }],
        parents,
        parent_weight,
        height: draft.height,
        parent_state_root: state,
        parent_message_receipts: receipts,
        messages,
        bls_aggregate: Some(bls_signature(&label("aggregate"))),
        timestamp: draft.timestamp,
        block_sig: Some(bls_signature(&label("block"))),
        fork_signaling: 0,
        parent_base_fee: TokenAmount::from_atto(BASE_FEE),
    }
}

/// The message lists of one block: BLS messages go in unsigned (their
/// signatures are aggregated), secp ones signed.
fn message_lists(overlay: &Overlay<'_>, messages: &[&SignedMessage]) -> Result<Cid, ProduceError> {
    let mut bls = Vec::new();
    let mut secp = Vec::new();
    for signed in messages {
        if signed.signature.sig_type == SignatureType::BLS {
            bls.push(overlay.put(&signed.message)?);
        } else {
            secp.push(overlay.put(signed)?);
        }
    }
    let meta = TxMeta {
        bls_messages: amt(overlay, bls)?,
        secp_messages: amt(overlay, secp)?,
    };
    Ok(overlay.put(&meta)?)
}

/// Builds the tipset `draft` describes on top of `parent`, whose execution
/// (`execute`) gave `(state, receipts)`. A sender's messages all go to one
/// block, in nonce order, so every block order executes them.
pub fn build(
    overlay: &Overlay<'_>,
    parent: &TipSet,
    draft: &Draft,
    (state, receipts): (Cid, Cid),
) -> Result<TipSet, ProduceError> {
    let blocks = draft.blocks.clamp(1, 5);
    let mut per_block: Vec<Vec<&SignedMessage>> = vec![Vec::new(); blocks];
    let mut senders: Vec<Address> = Vec::new();
    for signed in &draft.messages {
        let slot = match senders.iter().position(|s| *s == signed.message.from) {
            Some(slot) => slot,
            None => {
                senders.push(signed.message.from);
                senders.len() - 1
            }
        };
        per_block[slot % blocks].push(signed);
    }
    for list in &mut per_block {
        list.sort_by_key(|signed| (signed.message.from.to_bytes(), signed.message.sequence));
    }
    let parents = parent.key().cids().to_vec();
    let parent_weight = weight(parent);
    let mut headers = Vec::with_capacity(blocks);
    for (index, messages) in per_block.iter().enumerate() {
        let messages = message_lists(overlay, messages)?;
        let header = header(
            draft,
            index,
            parents.clone(),
            parent_weight.clone(),
            state,
            receipts,
            messages,
        );
        overlay.put(&header)?;
        headers.push(header);
    }
    Ok(TipSet::new(headers)?)
}

/// One more block, without messages, for the tipset `sibling` belongs to:
/// same parents, height, state and receipts, the next miner.
pub fn sibling_block(
    overlay: &Overlay<'_>,
    sibling: &TipSet,
    draft: &Draft,
) -> Result<BlockHeader, ProduceError> {
    let first = sibling
        .blocks()
        .next()
        .ok_or(ProduceError::TipSet(TipSetError::Empty))?;
    let messages = message_lists(overlay, &[])?;
    let header = header(
        draft,
        sibling.blocks().count(),
        first.parents.clone(),
        first.parent_weight.clone(),
        first.parent_state_root,
        first.parent_message_receipts,
        messages,
    );
    overlay.put(&header)?;
    Ok(header)
}

/// The genesis tipset: one block at height 0 over the genesis state.
pub fn genesis(
    overlay: &Overlay<'_>,
    accounts: &[Address],
    balance: &TokenAmount,
    timestamp: u64,
) -> Result<TipSet, ProduceError> {
    let state = state::genesis(overlay, accounts, balance)?;
    let receipts = amt::<()>(overlay, Vec::new())?;
    let messages = message_lists(overlay, &[])?;
    let draft = Draft {
        height: 0,
        blocks: 1,
        messages: Vec::new(),
        salt: 0,
        timestamp,
    };
    let mut header = header(
        &draft,
        0,
        Vec::new(),
        BigInt::default(),
        state,
        receipts,
        messages,
    );
    header.election_proof = None;
    header.win_post_proof = Vec::new();
    header.bls_aggregate = None;
    header.block_sig = None;
    overlay.put(&header)?;
    Ok(TipSet::new(vec![header])?)
}
