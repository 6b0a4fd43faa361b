//! The embedded backend: one machine, one file, for `dev`, imports and tests.
//!
//! Built on redb: a maintained, pure-Rust embedded key-value store with ACID
//! transactions where readers see a consistent snapshot while one writer
//! commits (MVCC). That is exactly the store's contract — a batch is seen whole
//! or not at all, and a head never before its data — with no C++ toolchain or
//! compaction tuning (RocksDB), and unlike sled it is actively maintained.
//!
//! Every table maps bytes to bytes; composite keys are concatenations whose
//! parts delimit themselves (CIDs do), so a prefix scan finds one entity's rows.

use std::path::Path;

use cid::Cid;
use fvm_shared::address::Address;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Head, Inclusion, NonceUse, Result, SCHEMA, SchemaVersion, Store, StoreError, WriteBatch,
    check_head_update,
};
use crate::chain::TipSetKey;

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Multihash → block whose links are all stored.
const BLOCKS: Table = TableDefinition::new("blocks");
/// Multihash → block whose links are not known to be stored.
const PARTIAL_BLOCKS: Table = TableDefinition::new("partial_blocks");
/// Height (8 bytes, order-preserving) ++ tipset key → ().
const TIPSETS_BY_HEIGHT: Table = TableDefinition::new("tipsets_by_height");
/// Normalized tipset key → canonical tipset key.
const TIPSET_KEYS: Table = TableDefinition::new("tipset_keys");
/// Message CID ++ index (4 bytes) ++ tipset key → ().
const INCLUSIONS: Table = TableDefinition::new("inclusions");
/// Sender length (1 byte) ++ sender ++ nonce (8 bytes) ++ message CID ++ tipset key → ().
const NONCE_USES: Table = TableDefinition::new("nonce_uses");
/// "head", "schema" → CBOR.
const META: Table = TableDefinition::new("meta");

const ALL_TABLES: [Table; 7] = [
    BLOCKS,
    PARTIAL_BLOCKS,
    TIPSETS_BY_HEIGHT,
    TIPSET_KEYS,
    INCLUSIONS,
    NONCE_USES,
    META,
];

#[derive(Debug)]
pub struct EmbeddedStore {
    db: Database,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        let db = Database::create(dir.join("store.redb")).map_err(StoreError::backend)?;
        let txn = db.begin_write().map_err(StoreError::backend)?;
        for table in ALL_TABLES {
            txn.open_table(table).map_err(StoreError::backend)?;
        }
        txn.commit().map_err(StoreError::backend)?;
        Ok(Self { db })
    }

    fn read<T>(
        &self,
        table: Table,
        f: impl FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let table = txn.open_table(table).map_err(StoreError::backend)?;
        f(&table)
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(table, |t| {
            Ok(t.get(key)
                .map_err(StoreError::backend)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// The keys under `prefix`, with the prefix cut off.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.read(table, |t| {
            let mut rows = Vec::new();
            for row in t.range(prefix..).map_err(StoreError::backend)? {
                let (key, _) = row.map_err(StoreError::backend)?;
                let Some(rest) = key.value().strip_prefix(prefix) else {
                    break;
                };
                rows.push(rest.to_vec());
            }
            Ok(rows)
        })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.get(META, name.as_bytes())?
            .map(|bytes| {
                fvm_ipld_encoding::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("meta {name}: {e}")))
            })
            .transpose()
    }
}

fn block_key(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

/// Heights sort as unsigned big-endian numbers once the sign bit is flipped.
fn height_bytes(height: i64) -> [u8; 8] {
    ((height as u64) ^ (1 << 63)).to_be_bytes()
}

fn nonce_prefix(sender: &Address, nonce: u64) -> Vec<u8> {
    let sender = sender.to_bytes();
    let mut key = Vec::with_capacity(1 + sender.len() + 8);
    key.push(sender.len() as u8);
    key.extend_from_slice(&sender);
    key.extend_from_slice(&nonce.to_be_bytes());
    key
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

/// The head as stored: (tipset key bytes, height, version, term).
type HeadRow = (fvm_ipld_encoding::BytesDe, i64, u64, u64);

impl Store for EmbeddedStore {
    fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        let key = block_key(cid);
        match self.get(BLOCKS, &key)? {
            Some(block) => Ok(Some(block)),
            None => self.get(PARTIAL_BLOCKS, &key),
        }
    }

    fn has_block(&self, cid: &Cid) -> Result<bool> {
        Ok(self.get_block(cid)?.is_some())
    }

    fn has_complete_block(&self, cid: &Cid) -> Result<bool> {
        Ok(self.get(BLOCKS, &block_key(cid))?.is_some())
    }

    fn tipsets_at_height(&self, height: i64) -> Result<Vec<TipSetKey>> {
        self.scan(TIPSETS_BY_HEIGHT, &height_bytes(height))?
            .iter()
            .map(|key| TipSetKey::from_bytes(key).map_err(|e| corrupt("tipset by height", e)))
            .collect()
    }

    fn tipset_key(&self, cids: &TipSetKey) -> Result<Option<TipSetKey>> {
        self.get(TIPSET_KEYS, &cids.normalized().to_bytes())?
            .map(|bytes| TipSetKey::from_bytes(&bytes).map_err(|e| corrupt("tipset key", e)))
            .transpose()
    }

    fn inclusions(&self, message: &Cid) -> Result<Vec<Inclusion>> {
        self.scan(INCLUSIONS, &message.to_bytes())?
            .iter()
            .map(|rest| {
                let (index, tipset) = rest
                    .split_at_checked(4)
                    .ok_or_else(|| corrupt("inclusion", "short key"))?;
                Ok(Inclusion {
                    index: u32::from_be_bytes(
                        index.try_into().map_err(|e| corrupt("inclusion", e))?,
                    ),
                    tipset: TipSetKey::from_bytes(tipset).map_err(|e| corrupt("inclusion", e))?,
                })
            })
            .collect()
    }

    fn nonce_uses(&self, sender: &Address, nonce: u64) -> Result<Vec<NonceUse>> {
        self.scan(NONCE_USES, &nonce_prefix(sender, nonce))?
            .iter()
            .map(|rest| {
                let mut cursor = rest.as_slice();
                let message = Cid::read_bytes(&mut cursor).map_err(|e| corrupt("nonce use", e))?;
                let tipset = TipSetKey::from_bytes(cursor).map_err(|e| corrupt("nonce use", e))?;
                Ok(NonceUse { message, tipset })
            })
            .collect()
    }

    fn head(&self) -> Result<Option<Head>> {
        self.meta::<HeadRow>("head")?
            .map(|(tipset, height, version, term)| {
                Ok(Head {
                    tipset: TipSetKey::from_bytes(&tipset.0).map_err(|e| corrupt("head", e))?,
                    height,
                    version,
                    term,
                })
            })
            .transpose()
    }

    fn schema(&self) -> Result<Option<SchemaVersion>> {
        Ok(self
            .meta::<(u32, u32)>("schema")?
            .map(|(version, min_reader)| SchemaVersion {
                version,
                min_reader,
            }))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::backend)?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(StoreError::backend)?;
            let mut partial = txn
                .open_table(PARTIAL_BLOCKS)
                .map_err(StoreError::backend)?;
            for (cid, data) in &batch.blocks {
                let key = block_key(cid);
                blocks
                    .insert(key.as_slice(), data.as_slice())
                    .map_err(StoreError::backend)?;
                partial
                    .remove(key.as_slice())
                    .map_err(StoreError::backend)?;
            }
            for (cid, data) in &batch.partial_blocks {
                let key = block_key(cid);
                if blocks
                    .get(key.as_slice())
                    .map_err(StoreError::backend)?
                    .is_none()
                {
                    partial
                        .insert(key.as_slice(), data.as_slice())
                        .map_err(StoreError::backend)?;
                }
            }
            let mut by_height = txn
                .open_table(TIPSETS_BY_HEIGHT)
                .map_err(StoreError::backend)?;
            let mut keys = txn.open_table(TIPSET_KEYS).map_err(StoreError::backend)?;
            for (height, tipset) in &batch.tipsets {
                let canonical = tipset.to_bytes();
                let row = [height_bytes(*height).as_slice(), &canonical].concat();
                by_height
                    .insert(row.as_slice(), &[][..])
                    .map_err(StoreError::backend)?;
                let normalized = tipset.normalized().to_bytes();
                keys.insert(normalized.as_slice(), canonical.as_slice())
                    .map_err(StoreError::backend)?;
            }
            let mut inclusions = txn.open_table(INCLUSIONS).map_err(StoreError::backend)?;
            for (message, inclusion) in &batch.inclusions {
                let row = [
                    message.to_bytes(),
                    inclusion.index.to_be_bytes().to_vec(),
                    inclusion.tipset.to_bytes(),
                ]
                .concat();
                inclusions
                    .insert(row.as_slice(), &[][..])
                    .map_err(StoreError::backend)?;
            }
            let mut nonces = txn.open_table(NONCE_USES).map_err(StoreError::backend)?;
            for (sender, nonce, used) in &batch.nonce_uses {
                let row = [
                    nonce_prefix(sender, *nonce),
                    used.message.to_bytes(),
                    used.tipset.to_bytes(),
                ]
                .concat();
                nonces
                    .insert(row.as_slice(), &[][..])
                    .map_err(StoreError::backend)?;
            }
        }
        txn.commit().map_err(StoreError::backend)
    }

    fn set_head(&self, expected_version: Option<u64>, head: Head) -> Result<()> {
        // The check and the write happen in one write transaction, and redb runs
        // one writer at a time: the compare-and-set is atomic.
        let txn = self.db.begin_write().map_err(StoreError::backend)?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::backend)?;
            let current = match meta.get(&b"head"[..]).map_err(StoreError::backend)? {
                Some(bytes) => {
                    let (tipset, height, version, term): HeadRow =
                        fvm_ipld_encoding::from_slice(bytes.value())
                            .map_err(|e| corrupt("head", e))?;
                    Some(Head {
                        tipset: TipSetKey::from_bytes(&tipset.0).map_err(|e| corrupt("head", e))?,
                        height,
                        version,
                        term,
                    })
                }
                None => None,
            };
            check_head_update(current.as_ref(), expected_version, &head)?;
            let keys = txn.open_table(TIPSET_KEYS).map_err(StoreError::backend)?;
            if keys
                .get(head.tipset.normalized().to_bytes().as_slice())
                .map_err(StoreError::backend)?
                .is_none()
            {
                return Err(StoreError::UnknownTipSet(head.tipset));
            }
            let row = fvm_ipld_encoding::to_vec(&(
                fvm_ipld_encoding::BytesSer(&head.tipset.to_bytes()),
                head.height,
                head.version,
                head.term,
            ))
            .map_err(|e| corrupt("head", e))?;
            meta.insert(&b"head"[..], row.as_slice())
                .map_err(StoreError::backend)?;
        }
        txn.commit().map_err(StoreError::backend)
    }

    fn migrate(&self) -> Result<SchemaVersion> {
        let current = self.schema()?;
        if current.is_some_and(|schema| schema.version >= SCHEMA.version) {
            return self.check_readable();
        }
        let row = fvm_ipld_encoding::to_vec(&(SCHEMA.version, SCHEMA.min_reader))
            .map_err(|e| corrupt("schema", e))?;
        let txn = self.db.begin_write().map_err(StoreError::backend)?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::backend)?;
            meta.insert(&b"schema"[..], row.as_slice())
                .map_err(StoreError::backend)?;
        }
        txn.commit().map_err(StoreError::backend)?;
        Ok(SCHEMA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::cbor;

    fn open() -> anyhow::Result<(tempfile::TempDir, EmbeddedStore)> {
        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(dir.path())?;
        Ok((dir, store))
    }

    crate::store_conformance_tests!(open);

    #[test]
    fn heights_keep_their_order() {
        let mut heights = [-5i64, 0, 3, -1, i64::MAX, i64::MIN];
        let mut encoded: Vec<_> = heights.iter().map(|h| height_bytes(*h)).collect();
        heights.sort();
        encoded.sort();
        assert_eq!(
            encoded,
            heights.iter().map(|h| height_bytes(*h)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn data_survives_reopening() -> anyhow::Result<()> {
        let (dir, store) = open()?;
        let (cid, block) = cbor::encode_block(&"kept")?;
        store.write(WriteBatch {
            blocks: vec![(cid, block.clone())],
            ..WriteBatch::default()
        })?;
        drop(store);
        let store = EmbeddedStore::open(dir.path())?;
        assert_eq!(store.get_block(&cid)?, Some(block));
        Ok(())
    }
}
