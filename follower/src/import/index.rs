//! The chain indices of an import: from the head back along parents, every
//! tipset by height and key, and where its messages are (inclusion positions and
//! sender nonces). Heights whose messages the input lacks are indexed without
//! them; the walk ends where the input's headers end.

use fvm_ipld_blockstore::Blockstore;

use crate::{
    chain::{
        BlockHeader, Network, TipSet, TipSetKey, cbor,
        selection::{SelectionError, tipset_messages},
    },
    store::{Inclusion, NonceUse, Store, StoreBlockstore, StoreError, WriteBatch},
};

const FLUSH_TIPSETS: usize = 256;
const FLUSH_ROWS: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the head tipset's block {0} is not in the input")]
    MissingHead(cid::Cid),
    #[error("tipset {key} is not a valid tipset: {reason}")]
    InvalidTipSet { key: TipSetKey, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
    #[error(transparent)]
    Selection(#[from] SelectionError),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub head: TipSetKey,
    pub head_height: i64,
    pub tipsets: u64,
    /// Tipsets whose messages were indexed.
    pub with_messages: u64,
    pub lowest_height: i64,
    /// Index rows written (two per tipset, two per message).
    pub rows: u64,
}

/// Loads the tipset of these blocks from the store, `None` if any is missing.
pub fn load_tipset(store: &dyn Store, key: &TipSetKey) -> Result<Option<TipSet>, IndexError> {
    load_tipset_from(&StoreBlockstore(store), key)
}

/// [`load_tipset`] from any blockstore.
fn load_tipset_from<BS: Blockstore>(
    blockstore: &BS,
    key: &TipSetKey,
) -> Result<Option<TipSet>, IndexError> {
    let mut headers = Vec::with_capacity(key.cids().len());
    for cid in key.cids() {
        let Some(bytes) = blockstore.get(cid).map_err(StoreError::backend)? else {
            return Ok(None);
        };
        headers.push(cbor::decode::<BlockHeader>(cid, &bytes)?);
    }
    TipSet::new(headers)
        .map(Some)
        .map_err(|e| IndexError::InvalidTipSet {
            key: key.clone(),
            reason: e.to_string(),
        })
}

/// Adds one tipset to `batch`: its height, and where its messages are
/// (inclusion positions and sender nonces). Returns whether its messages were
/// indexed: the input may lack them (or the state needed to order them).
pub fn index_tipset<BS: Blockstore>(
    blockstore: &BS,
    tipset: &TipSet,
    network: Network,
    batch: &mut WriteBatch,
) -> Result<bool, IndexError> {
    let key = tipset.key().clone();
    batch.tipsets.push((tipset.height(), key.clone()));
    let messages = match tipset_messages(blockstore, tipset, network) {
        Ok(messages) => messages,
        Err(SelectionError::Missing { .. } | SelectionError::Sender { .. }) => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    for (index, included) in messages.into_iter().enumerate() {
        let index = u32::try_from(index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.inclusions.push((
            included.cid,
            Inclusion {
                tipset: key.clone(),
                index,
            },
        ));
        batch.nonce_uses.push((
            included.sender,
            included.message.sequence,
            NonceUse {
                message: included.cid,
                tipset: key.clone(),
            },
        ));
    }
    Ok(true)
}

/// Indexes the chain from `head` down, reading its blocks from `blocks` (an
/// import reads its own input, locally) and writing the indices to `store`.
pub fn index_chain<BS: Blockstore>(
    store: &dyn Store,
    blocks: &BS,
    head: &TipSetKey,
    network: Network,
) -> Result<Indexed, IndexError> {
    let head_tipset = load_tipset_from(blocks, head)?.ok_or_else(|| {
        let missing = head
            .cids()
            .iter()
            .find(|cid| !blocks.has(cid).unwrap_or(false));
        IndexError::MissingHead(missing.copied().unwrap_or_default())
    })?;
    let mut indexed = Indexed {
        head: head_tipset.key().clone(),
        head_height: head_tipset.height(),
        lowest_height: head_tipset.height(),
        ..Indexed::default()
    };
    let mut batch = WriteBatch::default();
    let mut next = Some(head_tipset);
    while let Some(tipset) = next {
        indexed.tipsets += 1;
        indexed.lowest_height = tipset.height();
        if index_tipset(blocks, &tipset, network, &mut batch)? {
            indexed.with_messages += 1;
        }
        // By rows too: a tipset can carry thousands of messages, and what a
        // batch holds is the import's memory.
        if batch.tipsets.len() >= FLUSH_TIPSETS || batch.index_rows() >= FLUSH_ROWS as u64 {
            indexed.rows += batch.index_rows();
            store.write(std::mem::take(&mut batch))?;
        }
        next = if tipset.height() == 0 {
            None
        } else {
            load_tipset_from(blocks, &tipset.parents())?
        };
    }
    indexed.rows += batch.index_rows();
    store.write(batch)?;
    Ok(indexed)
}
