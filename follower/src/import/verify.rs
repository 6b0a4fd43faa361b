//! Staging and promotion: an import stages every block in a scratch database
//! (on local disk, not in memory, so a snapshot of any size fits), then
//! stores exactly the blocks whose whole DAG is there as complete, children
//! before parents: a block is stored complete only once every block it links
//! to has been. So an import cut off at any point leaves no block the
//! ingester would trust ("present ⇒ subtree complete") with holes under it,
//! and a rerun finishes the job. The blocks left (their DAG has a hole: an
//! old header whose state the snapshot does not hold) are stored partial:
//! readable, never trusted.
//!
//! Each block reaches the store once, and the existence of blocks outside the
//! input is asked in batches, concurrently.

use std::{collections::HashSet, path::Path};

use cid::Cid;
use fvm_ipld_encoding::DAG_CBOR;
use ipld_core::ipld::Ipld;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::{
    chain::cbor::IDENTITY_HASH,
    store::{Store, StoreError, WriteBatch},
};

/// CID bytes of each staged block → its data.
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
/// CID bytes of a staged block not yet stored complete → how many of its
/// links are not stored complete yet (a link to a block that is in neither
/// the input nor the store counts for ever).
const WAITING: TableDefinition<&[u8], u32> = TableDefinition::new("waiting");
/// CID bytes of a staged block → the staged blocks linking to it.
const PARENTS: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("parents");
/// Staged blocks whose links are all stored complete: next to be stored.
const READY: TableDefinition<&[u8], ()> = TableDefinition::new("ready");
/// The scratch database's page cache, in bytes.
const SCRATCH_CACHE: usize = 32 << 20;
/// Blocks per store write (and per scratch transaction).
const CHUNK: usize = 4096;

fn scratch(error: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("import scratch space: {error}"))
}

/// The blocks an import has staged, in a scratch database.
pub struct Staged {
    db: Database,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Staged")
    }
}

impl Staged {
    pub fn create(dir: &Path) -> Result<Self, StoreError> {
        // A small page cache: the scratch database is read and written in
        // chunks, and the import's memory must not grow with its input.
        let db = redb::Builder::new()
            .set_cache_size(SCRATCH_CACHE)
            .create(dir.join("staged.redb"))
            .map_err(scratch)?;
        let txn = db.begin_write().map_err(scratch)?;
        txn.open_table(DATA).map_err(scratch)?;
        txn.open_table(WAITING).map_err(scratch)?;
        txn.open_multimap_table(PARENTS).map_err(scratch)?;
        txn.open_table(READY).map_err(scratch)?;
        txn.commit().map_err(scratch)?;
        Ok(Self { db })
    }

    /// A write transaction on the scratch database. Its commits stay durable
    /// (one per chunk of blocks): redb holds what non-durable commits wrote
    /// in memory until a durable one, which would grow with the input.
    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        self.db.begin_write().map_err(scratch)
    }

    /// Stages blocks (verified against their CIDs by the caller).
    pub fn add(&self, blocks: &[(Cid, Vec<u8>)]) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut data = txn.open_table(DATA).map_err(scratch)?;
            for (cid, bytes) in blocks {
                data.insert(cid.to_bytes().as_slice(), bytes.as_slice())
                    .map_err(scratch)?;
            }
        }
        txn.commit().map_err(scratch)
    }

    /// Stores every staged block: complete, children first, when its DAG is
    /// complete; partial otherwise. Returns (complete, partial).
    pub fn promote(&self, store: &dyn Store) -> Result<(u64, u64), StoreError> {
        self.link_up(store)?;
        let complete = self.store_ready(store)?;
        let partial = self.store_rest(store)?;
        Ok((complete, partial))
    }

    /// Counts each staged block's links not yet stored complete, records
    /// which staged blocks link to which, and queues the blocks with none.
    /// Links outside the input are looked up in the store a chunk at a time.
    fn link_up(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = self.next_chunk(after.as_deref())?;
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            after = Some(last.to_bytes());
            let txn = self.begin()?;
            {
                let data = txn.open_table(DATA).map_err(scratch)?;
                let mut parents = txn.open_multimap_table(PARENTS).map_err(scratch)?;
                let mut outside = Vec::new();
                let mut linked = Vec::with_capacity(chunk.len());
                for (cid, bytes) in &chunk {
                    let mut inside = 0u32;
                    let mut out = Vec::new();
                    let mut seen = HashSet::new();
                    for link in links(cid, bytes) {
                        if link.hash().code() == IDENTITY_HASH || link == *cid || !seen.insert(link)
                        {
                            continue;
                        }
                        let key = link.to_bytes();
                        if data.get(key.as_slice()).map_err(scratch)?.is_some() {
                            parents
                                .insert(key.as_slice(), cid.to_bytes().as_slice())
                                .map_err(scratch)?;
                            inside += 1;
                        } else {
                            out.push(link);
                        }
                    }
                    outside.extend(out.iter().copied());
                    linked.push((cid, inside, out));
                }
                let stored: HashSet<Cid> = {
                    let unique: Vec<Cid> = outside
                        .into_iter()
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect();
                    let complete = store.complete_blocks(&unique)?;
                    unique
                        .into_iter()
                        .zip(complete)
                        .filter_map(|(cid, complete)| complete.then_some(cid))
                        .collect()
                };
                let mut waiting = txn.open_table(WAITING).map_err(scratch)?;
                let mut ready = txn.open_table(READY).map_err(scratch)?;
                for (cid, inside, out) in linked {
                    let missing = out.iter().filter(|link| !stored.contains(link)).count();
                    let count = inside + u32::try_from(missing).map_err(scratch)?;
                    let key = cid.to_bytes();
                    waiting.insert(key.as_slice(), count).map_err(scratch)?;
                    if count == 0 {
                        ready.insert(key.as_slice(), ()).map_err(scratch)?;
                    }
                }
            }
            txn.commit().map_err(scratch)?;
        }
    }

    /// Up to [`CHUNK`] staged blocks after the key `after`, in key order.
    fn next_chunk(&self, after: Option<&[u8]>) -> Result<Vec<(Cid, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(scratch)?;
        let data = txn.open_table(DATA).map_err(scratch)?;
        let range = match after {
            Some(after) => {
                data.range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            None => data.range::<&[u8]>(..),
        }
        .map_err(scratch)?;
        range
            .take(CHUNK)
            .map(|row| {
                let (key, value) = row.map_err(scratch)?;
                Ok((staged_cid(key.value())?, value.value().to_vec()))
            })
            .collect()
    }

    /// Stores the ready blocks as complete, a chunk at a time; each stored
    /// block may make its parents ready. Returns how many were stored.
    fn store_ready(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let mut stored = 0;
        loop {
            let chunk = {
                let txn = self.db.begin_read().map_err(scratch)?;
                let ready = txn.open_table(READY).map_err(scratch)?;
                let data = txn.open_table(DATA).map_err(scratch)?;
                ready
                    .iter()
                    .map_err(scratch)?
                    .take(CHUNK)
                    .map(|row| staged_block(&data, row.map_err(scratch)?.0.value(), "ready"))
                    .collect::<Result<Vec<_>, StoreError>>()?
            };
            if chunk.is_empty() {
                return Ok(stored);
            }
            let cids: Vec<Cid> = chunk.iter().map(|(cid, _)| *cid).collect();
            // The barrier: these are stored before any parent is queued.
            store.write(WriteBatch {
                blocks: chunk,
                ..WriteBatch::default()
            })?;
            stored += cids.len() as u64;
            let txn = self.begin()?;
            release_parents(&txn, &cids)?;
            txn.commit().map_err(scratch)?;
        }
    }

    /// Stores as partial the staged blocks never stored complete.
    fn store_rest(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let mut partial = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk: Vec<(Cid, Vec<u8>)> = {
                let txn = self.db.begin_read().map_err(scratch)?;
                let waiting = txn.open_table(WAITING).map_err(scratch)?;
                let data = txn.open_table(DATA).map_err(scratch)?;
                let range = match &after {
                    Some(after) => waiting.range::<&[u8]>((
                        std::ops::Bound::Excluded(after.as_slice()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => waiting.range::<&[u8]>(..),
                }
                .map_err(scratch)?;
                range
                    .take(CHUNK)
                    .map(|row| staged_block(&data, row.map_err(scratch)?.0.value(), "waiting"))
                    .collect::<Result<_, StoreError>>()?
            };
            let Some((last, _)) = chunk.last() else {
                return Ok(partial);
            };
            after = Some(last.to_bytes());
            partial += chunk.len() as u64;
            store.write(WriteBatch {
                partial_blocks: chunk,
                ..WriteBatch::default()
            })?;
        }
    }
}

/// The staged blocks as a blockstore, the store behind them: the import
/// reads its own input locally (to index the chain), not back from the store.
pub struct StagedReader<'a> {
    staged: &'a Staged,
    store: &'a dyn Store,
}

impl Staged {
    pub fn reader<'a>(&'a self, store: &'a dyn Store) -> StagedReader<'a> {
        StagedReader {
            staged: self,
            store,
        }
    }

    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(scratch)?;
        let data = txn.open_table(DATA).map_err(scratch)?;
        Ok(data
            .get(cid.to_bytes().as_slice())
            .map_err(scratch)?
            .map(|bytes| bytes.value().to_vec()))
    }
}

impl fvm_ipld_blockstore::Blockstore for StagedReader<'_> {
    fn get(&self, cid: &Cid) -> anyhow::Result<Option<Vec<u8>>> {
        match self.staged.get(cid)? {
            Some(bytes) => Ok(Some(bytes)),
            None => crate::store::StoreBlockstore(self.store).get(cid),
        }
    }

    fn put_keyed(&self, cid: &Cid, _block: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the import's input is read-only here (writing block {cid})")
    }

    fn has(&self, cid: &Cid) -> anyhow::Result<bool> {
        Ok(
            self.staged.get(cid)?.is_some()
                || crate::store::StoreBlockstore(self.store).has(cid)?,
        )
    }
}

/// After `stored` were stored complete: they leave the queue, and each
/// parent waits for one link less (ready when none is left).
fn release_parents(txn: &WriteTransaction, stored: &[Cid]) -> Result<(), StoreError> {
    let mut ready = txn.open_table(READY).map_err(scratch)?;
    let mut waiting = txn.open_table(WAITING).map_err(scratch)?;
    let parents = txn.open_multimap_table(PARENTS).map_err(scratch)?;
    for cid in stored {
        let key = cid.to_bytes();
        ready.remove(key.as_slice()).map_err(scratch)?;
        waiting.remove(key.as_slice()).map_err(scratch)?;
        for parent in parents.get(key.as_slice()).map_err(scratch)? {
            let parent = parent.map_err(scratch)?;
            let parent = parent.value();
            let left = waiting
                .get(parent)
                .map_err(scratch)?
                .map(|count| count.value())
                .ok_or_else(|| scratch("a parent is not waiting"))?;
            let left = left.saturating_sub(1);
            waiting.insert(parent, left).map_err(scratch)?;
            if left == 0 {
                ready.insert(parent, ()).map_err(scratch)?;
            }
        }
    }
    Ok(())
}

fn staged_cid(bytes: &[u8]) -> Result<Cid, StoreError> {
    Cid::try_from(bytes).map_err(|e| StoreError::Corrupt(format!("staged CID: {e}")))
}

/// The staged block under `key` (queued as `state`: ready, waiting), with
/// its data.
fn staged_block(
    data: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    state: &str,
) -> Result<(Cid, Vec<u8>), StoreError> {
    let bytes = data
        .get(key)
        .map_err(scratch)?
        .ok_or_else(|| scratch(format!("a {state} block has no data")))?;
    Ok((staged_cid(key)?, bytes.value().to_vec()))
}

/// The blocks a block links to: the DAG-CBOR and raw CIDs in a DAG-CBOR block
/// (tag 42). Other CIDs name things that are not blocks — sector and piece
/// commitments — and, as in Lotus's chain walks, are not followed.
pub fn links(cid: &Cid, data: &[u8]) -> Vec<Cid> {
    let mut found = Vec::new();
    if cid.codec() == DAG_CBOR
        && let Ok(ipld) = fvm_ipld_encoding::from_slice::<Ipld>(data)
    {
        collect_links(&ipld, &mut found);
    }
    found
}

const RAW: u64 = 0x55;

fn collect_links(ipld: &Ipld, found: &mut Vec<Cid>) {
    match ipld {
        Ipld::Link(cid) if matches!(cid.codec(), DAG_CBOR | RAW) => found.push(*cid),
        Ipld::List(items) => items.iter().for_each(|item| collect_links(item, found)),
        Ipld::Map(entries) => entries
            .values()
            .for_each(|value| collect_links(value, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{chain::cbor, store::embedded::EmbeddedStore};

    #[test]
    fn promotes_exactly_the_complete_subtrees() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(&dir.path().join("store"))?;
        let (leaf, leaf_data) = cbor::encode_block(&"leaf")?;
        let missing = cbor::encode_block(&"missing")?.0;
        let (outside, outside_data) = cbor::encode_block(&"stored before")?;
        let (whole, whole_data) = cbor::encode_block(&vec![leaf, outside])?;
        let (holed, holed_data) = cbor::encode_block(&vec![leaf, missing])?;
        let (top, top_data) = cbor::encode_block(&vec![whole, holed])?;
        store.write(WriteBatch {
            blocks: vec![(outside, outside_data)],
            ..WriteBatch::default()
        })?;
        let staged = Staged::create(dir.path())?;
        staged.add(&[
            (top, top_data),
            (holed, holed_data),
            (whole, whole_data),
            (leaf, leaf_data),
        ])?;
        assert_eq!(staged.promote(&store)?, (2, 2));
        assert!(store.has_complete_block(&leaf)? && store.has_complete_block(&whole)?);
        assert!(!store.has_complete_block(&holed)? && !store.has_complete_block(&top)?);
        assert!(store.has_block(&top)?, "incomplete blocks stay readable");
        Ok(())
    }
}
