//! The store: what the ingester (or an import) writes and followers read. One
//! trait, two backends (`embedded` here; CQL for YugabyteDB with the ingester),
//! and one conformance suite both must pass.
//!
//! The trait is synchronous: state trees are read through
//! `fvm_ipld_blockstore::Blockstore`, which is, and the RPC server runs queries
//! on blocking threads.

use cid::Cid;
use fvm_shared::address::Address;

use crate::chain::{TipSetKey, cbor};

pub mod blockstore;
pub mod cached;
pub mod conformance;
pub mod cql;
pub mod embedded;
mod url;

pub use blockstore::{StoreBlockstore, amt_store_failure, hamt_store_failure, store_failure};
pub use url::{CqlLogin, StoreUrl};

/// The schema this build writes, and the oldest reader that understands it.
pub const SCHEMA: SchemaVersion = SchemaVersion {
    version: 1,
    min_reader: 1,
};
/// The schema version this build reads.
pub const READER_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    pub version: u32,
    /// Readers older than this must not read the store.
    pub min_reader: u32,
}

/// The head pointer: the tipset every follower serves as the head, with a
/// version that only grows and the fencing term of the writer that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub tipset: TipSetKey,
    pub height: i64,
    pub version: u64,
    pub term: u64,
}

/// Where a message was included: a tipset, and its position in the tipset's
/// message list (as `ChainGetMessagesInTipset` orders it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Inclusion {
    pub tipset: TipSetKey,
    pub index: u32,
}

/// What one (sender, nonce) pair was used for: a message, in a tipset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NonceUse {
    pub message: Cid,
    pub tipset: TipSetKey,
}

/// One write. Blocks land before the indices that point at them, and
/// everything before any head that names it (the head is set separately);
/// within the blocks there is no order (see [`Store::write`]).
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Blocks stored with every block they link to ("present ⇒ complete").
    pub blocks: Vec<(Cid, Vec<u8>)>,
    /// Blocks whose links are not (yet) known to be stored: readable, never
    /// trusted as complete. A complete write of the same block supersedes it.
    pub partial_blocks: Vec<(Cid, Vec<u8>)>,
    /// Tipsets seen, with their heights.
    pub tipsets: Vec<(i64, TipSetKey)>,
    pub inclusions: Vec<(Cid, Inclusion)>,
    /// Sender (as an ID address when the chain compares senders by ID), nonce.
    pub nonce_uses: Vec<(Address, u64, NonceUse)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
            && self.partial_blocks.is_empty()
            && self.tipsets.is_empty()
            && self.inclusions.is_empty()
            && self.nonce_uses.is_empty()
    }

    /// The index rows the batch writes: two per tipset (by height, by key),
    /// one per inclusion and per nonce use.
    pub fn index_rows(&self) -> u64 {
        (2 * self.tipsets.len() + self.inclusions.len() + self.nonce_uses.len()) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store has no schema yet: run an import or the ingester first")]
    NoSchema,
    #[error("the store's schema {found:?} needs a reader of version {} or newer; this is {READER_VERSION}", found.min_reader)]
    SchemaTooNew { found: SchemaVersion },
    #[error("the head moved: expected version {expected:?}, found {found:?}")]
    HeadConflict {
        expected: Option<u64>,
        found: Option<u64>,
    },
    #[error("head version {attempted} does not exceed the current {current}")]
    VersionNotGrowing { current: u64, attempted: u64 },
    #[error(
        "writer term {attempted} is older than the head's term {current}: another writer took over"
    )]
    StaleTerm { current: u64, attempted: u64 },
    #[error("the head names tipset {0}, which the store does not have")]
    UnknownTipSet(TipSetKey),
    #[error("corrupt store entry: {0}")]
    Corrupt(String),
    #[error("store backend error: {0}")]
    Backend(String),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

impl StoreError {
    pub fn backend(error: impl std::fmt::Display) -> Self {
        StoreError::Backend(error.to_string())
    }

    /// The backend failed (unreachable, timed out, refused): nothing was
    /// learnt about the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A block read in flight (see [`Store::get_block_future`]).
pub type BlockFuture = futures::future::BoxFuture<'static, Result<Option<Vec<u8>>>>;

pub trait Store: Send + Sync + std::fmt::Debug {
    /// A block, complete or partial. Identity CIDs are answered by
    /// [`StoreBlockstore`], never stored.
    fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>>;
    /// [`Store::get_block`] as a future that a caller on an async runtime
    /// awaits without holding a thread: a networked backend's read is a
    /// request in flight, and a thread per read would cost more than the
    /// read (see the RPC server's `without_thread` handlers). `None` from a
    /// local backend, whose reads belong on a blocking thread.
    fn get_block_future(&self, _cid: Cid) -> Option<BlockFuture> {
        None
    }
    /// Whether a block is stored, complete or partial.
    fn has_block(&self, cid: &Cid) -> Result<bool>;
    /// Whether a block is stored with everything it links to: the ingester
    /// descends only into blocks for which this is false.
    fn has_complete_block(&self, cid: &Cid) -> Result<bool>;

    /// [`Store::has_complete_block`] for many blocks, in order: a networked
    /// backend asks concurrently rather than one round trip after another.
    fn complete_blocks(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        cids.iter()
            .map(|cid| self.has_complete_block(cid))
            .collect()
    }

    /// Every tipset seen at this height (several when the chain forked).
    fn tipsets_at_height(&self, height: i64) -> Result<Vec<TipSetKey>>;
    /// The tipset named by these CIDs in any order, in its canonical order.
    fn tipset_key(&self, cids: &TipSetKey) -> Result<Option<TipSetKey>>;

    fn inclusions(&self, message: &Cid) -> Result<Vec<Inclusion>>;
    fn nonce_uses(&self, sender: &Address, nonce: u64) -> Result<Vec<NonceUse>>;

    fn head(&self) -> Result<Option<Head>>;
    fn schema(&self) -> Result<Option<SchemaVersion>>;

    /// Stores a batch: its blocks, then its indices. The embedded backend
    /// applies it in one transaction; a networked one sends its rows
    /// concurrently, and a failed write may leave any subset of them. So a
    /// writer that needs an order ("present ⇒ complete": children before
    /// parents) writes in several batches, each once the one before returned.
    fn write(&self, batch: WriteBatch) -> Result<()>;
    /// Moves the head if it is still at `expected_version` (`None`: no head yet),
    /// the new version is larger, the writer's term is not older than the head's,
    /// and the tipset is stored.
    fn set_head(&self, expected_version: Option<u64>, head: Head) -> Result<()>;
    /// Brings the schema to [`SCHEMA`] (the writer's job; additive).
    fn migrate(&self) -> Result<SchemaVersion>;

    /// Fails unless this build may read the store.
    fn check_readable(&self) -> Result<SchemaVersion> {
        let schema = self.schema()?.ok_or(StoreError::NoSchema)?;
        if schema.min_reader > READER_VERSION {
            return Err(StoreError::SchemaTooNew { found: schema });
        }
        Ok(schema)
    }
}

/// Why a conditional head update was refused, from the head found then
/// (version, term): a newer term means another writer took over.
pub fn head_refusal(
    expected_version: Option<u64>,
    attempted_term: u64,
    found: Option<(u64, u64)>,
) -> StoreError {
    match found {
        Some((_, term)) if term > attempted_term => StoreError::StaleTerm {
            current: term,
            attempted: attempted_term,
        },
        found => StoreError::HeadConflict {
            expected: expected_version,
            found: found.map(|(version, _)| version),
        },
    }
}

/// The head rules every backend enforces, given the head it holds now.
pub fn check_head_update(
    current: Option<&Head>,
    expected_version: Option<u64>,
    next: &Head,
) -> Result<()> {
    let current_version = current.map(|head| head.version);
    if current_version != expected_version {
        return Err(StoreError::HeadConflict {
            expected: expected_version,
            found: current_version,
        });
    }
    if let Some(current) = current {
        if next.term < current.term {
            return Err(StoreError::StaleTerm {
                current: current.term,
                attempted: next.term,
            });
        }
        if next.version <= current.version {
            return Err(StoreError::VersionNotGrowing {
                current: current.version,
                attempted: next.version,
            });
        }
    }
    Ok(())
}
