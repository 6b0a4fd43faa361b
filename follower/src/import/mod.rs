//! `lotus-follower import`: chain data from CARv1 files and FRC-0108 v2
//! snapshots (plain or zstd, from a file or an http(s) URL) into the store.
//!
//! Streamed in bounded memory: blocks are verified against their CIDs and
//! staged in a scratch database; then stored, those whose DAG is complete as
//! complete (children first), the others as partial; then the chain is
//! indexed from the head; and only then does the head move. A corrupt or
//! truncated input fails before the store changes at all.

mod car;
mod index;
mod levels;
pub mod source;
mod verify;

use std::time::{Duration, Instant};

use cid::Cid;
use fvm_ipld_encoding::tuple::*;

pub use car::{CarError, CarStream, Frame};
pub use index::{IndexError, Indexed, index_tipset, load_tipset};
pub use levels::{Linked, children_first};
pub use verify::links;

use crate::{
    chain::{Network, TipSetKey, cbor},
    store::{Head, Store, StoreError},
};

const FLUSH_BLOCKS: usize = 4096;
const FLUSH_BYTES: usize = 32 << 20;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The root block of an FRC-0108 v2 snapshot.
#[derive(Debug, Clone, PartialEq, Serialize_tuple, Deserialize_tuple)]
pub struct SnapshotMetadata {
    pub version: u64,
    pub head_tipset_keys: Vec<Cid>,
    pub f3_data: Option<Cid>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    // Each inner error is part of the message, so it is not also a `source`
    // (an error chain would print it twice).
    #[error("cannot read {location}: {reason}")]
    Source {
        location: String,
        reason: std::io::Error,
    },
    #[error("{location}: {reason}")]
    Car { location: String, reason: CarError },
    #[error("{location}: {reason}")]
    Index {
        location: String,
        reason: IndexError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("scratch space: {0}")]
    Scratch(std::io::Error),
}

/// What one input brought.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub location: String,
    pub blocks: u64,
    /// Block bytes (after decompression), the F3 section included.
    pub bytes: u64,
    pub skipped_f3_bytes: u64,
    pub indexed: Indexed,
    pub complete_blocks: u64,
    pub partial_blocks: u64,
    pub head: Head,
    pub elapsed: Duration,
}

/// Progress while streaming: blocks and bytes so far.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub blocks: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Imports one input and moves the head to its head tipset.
pub fn import(
    store: &dyn Store,
    location: &str,
    network: Network,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    store.migrate()?;
    let source = source::open(location).map_err(|reason| ImportError::Source {
        location: location.to_owned(),
        reason,
    })?;
    let car_error = |reason| ImportError::Car {
        location: location.to_owned(),
        reason,
    };
    let mut car = CarStream::open(source).map_err(car_error)?;
    let scratch = tempfile::tempdir().map_err(ImportError::Scratch)?;
    let staged = verify::Staged::create(scratch.path())?;

    let mut head = TipSetKey(car.roots.clone());
    let mut f3_data = None;
    let mut stats = Progress {
        blocks: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    let mut skipped_f3_bytes = 0;
    let mut batch: Vec<(Cid, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0;
    let mut last_report = Instant::now();
    let mut first = true;
    while let Some(frame) = car
        .next_frame(|cid| Some(*cid) == f3_data)
        .map_err(car_error)?
    {
        match frame {
            Frame::Skipped { len, .. } => {
                skipped_f3_bytes += len;
                stats.bytes += len;
            }
            Frame::Block { cid, data } => {
                if first && car.roots.len() == 1 && cid == car.roots[0] {
                    // An FRC-0108 v2 snapshot names its metadata as the only root.
                    if let Ok(metadata) = cbor::decode::<SnapshotMetadata>(&cid, &data)
                        && metadata.version == 2
                    {
                        head = TipSetKey(metadata.head_tipset_keys);
                        f3_data = metadata.f3_data;
                    }
                }
                stats.blocks += 1;
                stats.bytes += data.len() as u64;
                // Identity CIDs carry their data: answered inline, never stored.
                if cid.hash().code() != cbor::IDENTITY_HASH {
                    batch_bytes += data.len();
                    batch.push((cid, data));
                }
            }
        }
        first = false;
        if batch.len() >= FLUSH_BLOCKS || batch_bytes >= FLUSH_BYTES {
            stage(&staged, &mut batch)?;
            batch_bytes = 0;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            stats.elapsed = started.elapsed();
            progress(stats);
            last_report = Instant::now();
        }
    }
    stage(&staged, &mut batch)?;

    // The blocks first (complete ones children first), then the indices that
    // name them, then the head.
    let (complete_blocks, partial_blocks) = staged.promote(store)?;
    let indexed =
        index::index_chain(store, &staged.reader(store), &head, network).map_err(|reason| {
            ImportError::Index {
                location: location.to_owned(),
                reason,
            }
        })?;
    let current = store.head()?;
    let next = Head {
        tipset: indexed.head.clone(),
        height: indexed.head_height,
        version: current.as_ref().map_or(1, |head| head.version + 1),
        // An import writes as whichever writer holds the store; it takes no term.
        term: current.as_ref().map_or(0, |head| head.term),
    };
    store.set_head(current.map(|head| head.version), next.clone())?;
    stats.elapsed = started.elapsed();
    progress(stats);
    Ok(ImportReport {
        location: location.to_owned(),
        blocks: stats.blocks,
        bytes: stats.bytes,
        skipped_f3_bytes,
        indexed,
        complete_blocks,
        partial_blocks,
        head: next,
        elapsed: stats.elapsed,
    })
}

fn stage(staged: &verify::Staged, batch: &mut Vec<(Cid, Vec<u8>)>) -> Result<(), StoreError> {
    staged.add(batch)?;
    batch.clear();
    Ok(())
}
#[cfg(test)]
mod tests;
