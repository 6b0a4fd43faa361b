//! Promotion of staged blocks: an import stores every block as partial first,
//! then marks complete exactly those whose whole DAG is stored. So an import
//! cut off at any point leaves no block the ingester would trust ("present ⇒
//! subtree complete") with holes under it, and a rerun finishes the job.
//!
//! The staged list lives in a scratch file rather than in memory, so a snapshot
//! of any size verifies in bounded memory.

use std::{collections::HashSet, path::Path};

use cid::Cid;
use fvm_ipld_encoding::DAG_CBOR;
use ipld_core::ipld::Ipld;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::levels::{Linked, children_first};
use crate::{
    chain::cbor::IDENTITY_HASH,
    store::{Store, StoreError, WriteBatch},
};

/// CID bytes of each staged block → ().
const STAGED: TableDefinition<&[u8], ()> = TableDefinition::new("staged");
const FLUSH_BLOCKS: usize = 4096;

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
        let db = Database::create(dir.join("staged.redb")).map_err(StoreError::backend)?;
        Ok(Self { db })
    }

    pub fn add(&self, cids: &[Cid]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::backend)?;
        {
            let mut table = txn.open_table(STAGED).map_err(StoreError::backend)?;
            for cid in cids {
                table
                    .insert(cid.to_bytes().as_slice(), ())
                    .map_err(StoreError::backend)?;
            }
        }
        txn.commit().map_err(StoreError::backend)
    }

    /// Marks complete every staged block whose DAG is complete in `store`.
    /// Returns (complete, still partial).
    pub fn promote(&self, store: &dyn Store) -> Result<(u64, u64), StoreError> {
        let mut promoter = Promoter {
            store,
            pending: Vec::new(),
            unflushed: HashSet::new(),
            incomplete: HashSet::new(),
        };
        let (mut complete, mut partial) = (0, 0);
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let table = match txn.open_table(STAGED) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, 0)),
            Err(error) => return Err(StoreError::backend(error)),
        };
        for row in table.iter().map_err(StoreError::backend)? {
            let (key, _) = row.map_err(StoreError::backend)?;
            let cid = Cid::try_from(key.value())
                .map_err(|e| StoreError::Corrupt(format!("staged CID: {e}")))?;
            if promoter.resolve(cid)? {
                complete += 1;
            } else {
                partial += 1;
            }
        }
        promoter.flush()?;
        Ok((complete, partial))
    }
}

struct Promoter<'a> {
    store: &'a dyn Store,
    /// Found complete, not yet written as such.
    pending: Vec<Linked>,
    /// The CIDs of `pending`.
    unflushed: HashSet<Cid>,
    /// Known to have a missing block below them.
    incomplete: HashSet<Cid>,
}

/// A block being checked: its links, and how many were checked.
struct Visit {
    cid: Cid,
    data: Vec<u8>,
    links: Vec<Cid>,
    next: usize,
}

impl Promoter<'_> {
    fn is_complete(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(cid.hash().code() == IDENTITY_HASH
            || self.unflushed.contains(cid)
            || self.store.has_complete_block(cid)?)
    }

    fn visit(&self, cid: Cid) -> Result<Option<Visit>, StoreError> {
        let Some(data) = self.store.get_block(&cid)? else {
            return Ok(None);
        };
        let links = links(&cid, &data);
        Ok(Some(Visit {
            cid,
            data,
            links,
            next: 0,
        }))
    }

    /// Whether `root`'s DAG is complete, promoting every complete block found.
    /// Depth-first with an explicit stack: header chains run millions deep.
    fn resolve(&mut self, root: Cid) -> Result<bool, StoreError> {
        if self.is_complete(&root)? {
            return Ok(true);
        }
        if self.incomplete.contains(&root) {
            return Ok(false);
        }
        let Some(first) = self.visit(root)? else {
            return Ok(false);
        };
        let mut stack = vec![first];
        while let Some(top) = stack.last_mut() {
            let Some(link) = top.links.get(top.next).copied() else {
                let done = stack
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("empty stack".into()))?;
                self.promote(done)?;
                continue;
            };
            top.next += 1;
            if self.is_complete(&link)? {
                continue;
            }
            let child = if self.incomplete.contains(&link) {
                None
            } else {
                self.visit(link)?
            };
            match child {
                Some(child) => stack.push(child),
                None => {
                    // Everything on the stack links down to the hole.
                    self.incomplete
                        .extend(stack.drain(..).map(|visit| visit.cid));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn promote(&mut self, visit: Visit) -> Result<(), StoreError> {
        self.unflushed.insert(visit.cid);
        self.pending.push((visit.cid, visit.data, visit.links));
        if self.pending.len() >= FLUSH_BLOCKS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending blocks as complete, a level at a time, children
    /// first: an import cut off here leaves no complete block above a hole.
    fn flush(&mut self) -> Result<(), StoreError> {
        for level in children_first(std::mem::take(&mut self.pending)) {
            self.store.write(WriteBatch {
                blocks: level,
                ..WriteBatch::default()
            })?;
        }
        self.unflushed.clear();
        Ok(())
    }
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
        let (whole, whole_data) = cbor::encode_block(&vec![leaf])?;
        let (holed, holed_data) = cbor::encode_block(&vec![leaf, missing])?;
        let (top, top_data) = cbor::encode_block(&vec![whole, holed])?;
        let staged_blocks = vec![
            (leaf, leaf_data),
            (whole, whole_data),
            (holed, holed_data),
            (top, top_data),
        ];
        let cids: Vec<Cid> = staged_blocks.iter().map(|(cid, _)| *cid).collect();
        store.write(WriteBatch {
            partial_blocks: staged_blocks,
            ..WriteBatch::default()
        })?;
        let staged = Staged::create(dir.path())?;
        staged.add(&cids)?;
        assert_eq!(staged.promote(&store)?, (2, 2));
        assert!(store.has_complete_block(&leaf)? && store.has_complete_block(&whole)?);
        assert!(!store.has_complete_block(&holed)? && !store.has_complete_block(&top)?);
        assert!(store.has_block(&top)?, "incomplete blocks stay readable");
        Ok(())
    }
}
