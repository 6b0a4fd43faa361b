//! A follower's in-process cache in front of the shared store: blocks are
//! immutable (content-addressed), so cached blocks never go stale. Everything
//! else (head, indices) goes to the store every time.

use std::sync::Arc;

use cid::Cid;
use fvm_shared::address::Address;
use prometheus::IntCounter;
use quick_cache::{Weighter, sync::Cache};

use super::{Head, Inclusion, NonceUse, Result, SchemaVersion, Store, WriteBatch};
use crate::chain::TipSetKey;

#[derive(Debug, Clone)]
struct BlockWeight;

impl Weighter<Cid, Arc<Vec<u8>>> for BlockWeight {
    fn weight(&self, _cid: &Cid, block: &Arc<Vec<u8>>) -> u64 {
        // The CID key and bookkeeping cost about as much as a small block.
        block.len() as u64 + 128
    }
}

type Blocks = Cache<Cid, Arc<Vec<u8>>, BlockWeight>;

pub struct CachedStore {
    inner: Arc<dyn Store>,
    /// `None` when the cache is off (a capacity of 0).
    blocks: Option<Arc<Blocks>>,
    hits: IntCounter,
    misses: IntCounter,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field(
                "cached_bytes",
                &self.blocks.as_ref().map_or(0, |blocks| blocks.weight()),
            )
            .finish()
    }
}

impl CachedStore {
    pub fn new(
        inner: Arc<dyn Store>,
        capacity_bytes: u64,
        hits: IntCounter,
        misses: IntCounter,
    ) -> Self {
        let estimated_items = (capacity_bytes / 1024).clamp(16, 1 << 24) as usize;
        Self {
            inner,
            blocks: (capacity_bytes > 0).then(|| {
                Arc::new(Cache::with_weighter(
                    estimated_items,
                    capacity_bytes,
                    BlockWeight,
                ))
            }),
            hits,
            misses,
        }
    }

    /// The block if cached, counting the hit (a miss is counted where the
    /// store is then read).
    fn cached(&self, cid: &Cid) -> Option<Vec<u8>> {
        let block = self.blocks.as_ref()?.get(cid)?;
        self.hits.inc();
        Some(block.as_ref().clone())
    }
}

impl Store for CachedStore {
    fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        if let Some(block) = self.cached(cid) {
            return Ok(Some(block));
        }
        self.misses.inc();
        let block = self.inner.get_block(cid)?;
        if let (Some(blocks), Some(block)) = (&self.blocks, &block) {
            blocks.insert(*cid, Arc::new(block.clone()));
        }
        Ok(block)
    }

    fn get_block_future(&self, cid: Cid) -> Option<super::BlockFuture> {
        if let Some(block) = self.cached(&cid) {
            return Some(Box::pin(std::future::ready(Ok(Some(block)))));
        }
        let read = self.inner.get_block_future(cid)?;
        self.misses.inc();
        let blocks = self.blocks.clone();
        Some(Box::pin(async move {
            let block = read.await?;
            if let (Some(blocks), Some(block)) = (blocks, &block) {
                blocks.insert(cid, Arc::new(block.clone()));
            }
            Ok(block)
        }))
    }

    fn has_block(&self, cid: &Cid) -> Result<bool> {
        Ok(self
            .blocks
            .as_ref()
            .is_some_and(|blocks| blocks.get(cid).is_some())
            || self.inner.has_block(cid)?)
    }

    fn has_complete_block(&self, cid: &Cid) -> Result<bool> {
        self.inner.has_complete_block(cid)
    }

    fn complete_blocks(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        self.inner.complete_blocks(cids)
    }

    fn tipsets_at_height(&self, height: i64) -> Result<Vec<TipSetKey>> {
        self.inner.tipsets_at_height(height)
    }

    fn tipset_key(&self, cids: &TipSetKey) -> Result<Option<TipSetKey>> {
        self.inner.tipset_key(cids)
    }

    fn inclusions(&self, message: &Cid) -> Result<Vec<Inclusion>> {
        self.inner.inclusions(message)
    }

    fn nonce_uses(&self, sender: &Address, nonce: u64) -> Result<Vec<NonceUse>> {
        self.inner.nonce_uses(sender, nonce)
    }

    fn head(&self) -> Result<Option<Head>> {
        self.inner.head()
    }

    fn schema(&self) -> Result<Option<SchemaVersion>> {
        self.inner.schema()
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch)
    }

    fn set_head(&self, expected_version: Option<u64>, head: Head) -> Result<()> {
        self.inner.set_head(expected_version, head)
    }

    fn migrate(&self) -> Result<SchemaVersion> {
        self.inner.migrate()
    }
}
