//! `lotus-follower ingest`: the single writer. It follows the leader's head,
//! copies every new tipset into the store — headers, message lists, messages,
//! receipts and the new state-tree nodes, each DAG whole before its root is
//! written ("present ⇒ complete") — indexes it, and moves the head last. A
//! leader or store outage is retried; the ingester recovers by itself.

pub mod leader;
pub mod lease;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cid::Cid;
use lotus_follower_interfaces::lease::OK;

use self::{
    leader::{Leader, LeaderError},
    lease::{LeaseHolder, Report, short},
};
use crate::{
    chain::{BlockHeader, Network, TipSet, TipSetKey, cbor, tipset::TipSetError},
    import::{IndexError, Linked, children_first, index_tipset, links},
    metrics::Metrics,
    store::{Head, Store, StoreBlockstore, StoreError, WriteBatch},
};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
    #[error("the leader's tipset is invalid: {0}")]
    TipSet(#[from] TipSetError),
    #[error(
        "the leader is more than {max_gap} epochs ahead of the store (at {leader}, store at {store:?}): \
         bootstrap the store with `lotus-follower import` of a recent snapshot, or raise --max-gap"
    )]
    Gap {
        max_gap: i64,
        leader: i64,
        store: Option<i64>,
    },
}

/// The side a sync failed on, as the Lease reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Leader,
    Store,
}

impl IngestError {
    pub fn component(&self) -> Component {
        match self {
            IngestError::Store(_) | IngestError::Index(_) => Component::Store,
            IngestError::Leader(_)
            | IngestError::Cbor(_)
            | IngestError::TipSet(_)
            | IngestError::Gap { .. } => Component::Leader,
        }
    }
}

/// What one sync wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub height: i64,
    pub tipsets: usize,
    pub objects: usize,
    /// Rows written: the objects' and the index rows.
    pub rows: u64,
}

#[derive(Debug)]
pub struct Ingester {
    store: Arc<dyn Store>,
    leader: Leader,
    network: Network,
    /// The ingester refuses to follow across a larger gap (epochs).
    max_gap: i64,
    /// The fencing term written with every head: the Lease's transitions
    /// while one is held, or what the ingester was started with.
    term: AtomicU64,
    metrics: Metrics,
    /// Blocks this ingester stored complete, or found stored complete:
    /// nothing is ever deleted, so they need no existence check again. Most
    /// links of a changed state node are its unchanged siblings, which an
    /// ingester running for a while has seen.
    known_complete: quick_cache::sync::Cache<Cid, ()>,
    /// Blocks recently written or read, for indexing the next tipsets.
    recent: RecentBlocks,
}

/// How many CIDs the ingester remembers as stored complete (about 100 bytes
/// each).
const KNOWN_COMPLETE: usize = 1 << 20;

/// The recently written or read blocks' cache, by bytes.
const RECENT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
struct BlockWeight;

impl quick_cache::Weighter<Cid, Arc<[u8]>> for BlockWeight {
    fn weight(&self, _cid: &Cid, block: &Arc<[u8]>) -> u64 {
        block.len() as u64 + 128
    }
}

type RecentBlocks = quick_cache::sync::Cache<Cid, Arc<[u8]>, BlockWeight>;

/// Raw blocks with their CIDs.
type Blocks = Vec<(Cid, Vec<u8>)>;

/// One tipset fetched and indexed, ready to be written.
struct Prepared {
    tipset: TipSet,
    /// Its new blocks, children first (see [`children_first`]).
    levels: Vec<Blocks>,
    indices: WriteBatch,
    objects: usize,
}

/// The blocks of the tipset being written while the next is prepared.
type Unwritten = HashMap<Cid, Arc<[u8]>>;

/// The blocks a sync fetched (with their links), then those of the tipset
/// being written meanwhile, then the blocks recently written or read, then
/// the store: indexing a tipset resolves its senders in state trees mostly
/// written by the tipsets just before it.
struct Fetched<'a> {
    blocks: &'a HashMap<Cid, (Vec<u8>, Vec<Cid>)>,
    unwritten: &'a Unwritten,
    recent: &'a RecentBlocks,
    store: StoreBlockstore<'a, dyn Store>,
}

impl fvm_ipld_blockstore::Blockstore for Fetched<'_> {
    fn get(&self, cid: &Cid) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some((bytes, _)) = self.blocks.get(cid) {
            return Ok(Some(bytes.clone()));
        }
        if let Some(bytes) = self.unwritten.get(cid) {
            return Ok(Some(bytes.to_vec()));
        }
        if let Some(bytes) = self.recent.get(cid) {
            return Ok(Some(bytes.to_vec()));
        }
        let found = self.store.get(cid)?;
        if let Some(bytes) = &found {
            self.recent.insert(*cid, Arc::from(bytes.as_slice()));
        }
        Ok(found)
    }

    fn put_keyed(&self, cid: &Cid, _block: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("fetched blocks are read-only (writing block {cid})")
    }

    fn has(&self, cid: &Cid) -> anyhow::Result<bool> {
        Ok(self.blocks.contains_key(cid)
            || self.unwritten.contains_key(cid)
            || self.store.has(cid)?)
    }
}

fn is_identity(cid: &Cid) -> bool {
    cid.hash().code() == cbor::IDENTITY_HASH
}

impl Ingester {
    pub fn new(
        store: Arc<dyn Store>,
        leader: Leader,
        network: Network,
        max_gap: i64,
        term: u64,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            leader,
            network,
            max_gap,
            term: AtomicU64::new(term),
            metrics,
            known_complete: quick_cache::sync::Cache::new(KNOWN_COMPLETE),
            recent: RecentBlocks::with_weighter(
                (RECENT_BYTES / 512) as usize,
                RECENT_BYTES,
                BlockWeight,
            ),
        }
    }

    /// Brings the store to the leader's head: the new tipsets oldest first,
    /// each written whole and then made the head. `None` when already there.
    pub fn sync_once(&self) -> Result<Option<Synced>, IngestError> {
        self.store.migrate()?;
        let store_head = self.store.head()?;
        let leader_head = self.leader.head()?;
        if store_head.as_ref().map(|head| &head.tipset) == Some(&leader_head) {
            return Ok(None);
        }
        let store_height = store_head.as_ref().map(|head| head.height);
        // Walk back from the leader's head to a tipset the store has.
        let mut pending: Vec<(TipSet, Blocks)> = Vec::new();
        let mut key = leader_head.clone();
        let mut leader_height = None;
        while self.store.tipset_key(&key)?.is_none() {
            let blocks: Blocks = key
                .cids()
                .iter()
                .copied()
                .zip(self.leader.read_objs(key.cids())?)
                .collect();
            let headers = blocks
                .iter()
                .map(|(cid, bytes)| cbor::decode::<BlockHeader>(cid, bytes))
                .collect::<Result<Vec<_>, _>>()?;
            let tipset = TipSet::new(headers)?;
            let height = tipset.height();
            let top = *leader_height.get_or_insert(height);
            if top - height > self.max_gap {
                return Err(IngestError::Gap {
                    max_gap: self.max_gap,
                    leader: top,
                    store: store_height,
                });
            }
            key = tipset.parents();
            pending.push((tipset, blocks));
            if height == 0 {
                break;
            }
        }
        let mut synced = Synced {
            height: store_height.unwrap_or(0),
            tipsets: 0,
            objects: 0,
            rows: 0,
        };
        // The head's version as this sync found it, carried from one head to
        // the next: the store's compare-and-set then refuses the sync if any
        // other writer moved the head meanwhile.
        let mut version = store_head.map(|head| head.version);
        if pending.is_empty() {
            // The leader's head is stored whole already (an earlier sync
            // stopped before moving the head, or was refused it): only the
            // head moves.
            let tipset = crate::import::load_tipset(self.store.as_ref(), &leader_head)?
                .ok_or(StoreError::UnknownTipSet(leader_head))?;
            self.move_head(&tipset, &mut version)?;
            synced.height = tipset.height();
            return Ok(Some(synced));
        }
        // Two stages: while one tipset is written, the next is fetched from
        // the leader and indexed (the database and the leader work at once).
        // The hand-over is a rendezvous, so while the fetcher prepares a
        // tipset only the one before it is unwritten; the fetcher keeps that
        // one's blocks, counts them as stored (they reach the store before
        // anything the next tipset writes: tipsets are written in order, each
        // whole before the next starts) and reads them when indexing.
        // Whatever fails ends the sync; the retry starts from the store's head.
        std::thread::scope(|scope| {
            let (prepared_tx, prepared) = std::sync::mpsc::sync_channel(0);
            let fetcher = scope.spawn(move || -> Result<(), IngestError> {
                let mut unwritten = Unwritten::new();
                for (tipset, headers) in pending.into_iter().rev() {
                    let next;
                    (next, unwritten) = self.prepare(tipset, headers, &unwritten)?;
                    if prepared_tx.send(next).is_err() {
                        break; // the writer failed and stopped
                    }
                }
                Ok(())
            });
            for next in prepared {
                let (height, objects) = (next.tipset.height(), next.objects);
                synced.rows += objects as u64 + next.indices.index_rows();
                self.write_tipset(next, &mut version)?;
                self.metrics.ingest_tipsets.inc();
                self.metrics.ingest_objects.inc_by(objects as u64);
                synced.objects += objects;
                synced.tipsets += 1;
                synced.height = height;
            }
            fetcher
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        Ok(Some(synced))
    }

    /// Fetches every block under `roots` the store lacks, level by level
    /// (one batch per level), with its links; returns them all: each subtree
    /// is then whole.
    fn fetch_dags(
        &self,
        roots: Vec<Cid>,
        unwritten: &Unwritten,
        fetched: &mut HashMap<Cid, (Vec<u8>, Vec<Cid>)>,
    ) -> Result<(), IngestError> {
        let mut frontier = roots;
        while !frontier.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let candidates: Vec<Cid> = frontier
                .into_iter()
                .filter(|cid| {
                    !is_identity(cid)
                        && !fetched.contains_key(cid)
                        && !unwritten.contains_key(cid)
                        && self.known_complete.get(cid).is_none()
                        && seen.insert(*cid)
                })
                .collect();
            let complete = self.store.complete_blocks(&candidates)?;
            let mut wanted = Vec::new();
            for (cid, complete) in candidates.into_iter().zip(complete) {
                if complete {
                    self.known_complete.insert(cid, ());
                } else {
                    wanted.push(cid);
                }
            }
            let blocks = self.leader.read_objs(&wanted)?;
            frontier = Vec::new();
            for (cid, bytes) in wanted.into_iter().zip(blocks) {
                let linked = links(&cid, &bytes);
                frontier.extend(linked.iter().copied());
                fetched.insert(cid, (bytes, linked));
            }
        }
        Ok(())
    }

    /// Fetches what one tipset adds — its DAGs, minus what is stored
    /// complete or `unwritten` (the tipset before it, being written) — and
    /// indexes it, ready to be written; with its blocks, shared, for the
    /// fetcher to keep while they are written.
    fn prepare(
        &self,
        tipset: TipSet,
        headers: Blocks,
        unwritten: &Unwritten,
    ) -> Result<(Prepared, Unwritten), IngestError> {
        let mut roots = Vec::new();
        for header in tipset.blocks() {
            roots.extend([
                header.messages,
                header.parent_message_receipts,
                header.parent_state_root,
            ]);
        }
        let mut fetched = HashMap::new();
        self.fetch_dags(roots, unwritten, &mut fetched)?;
        for (cid, bytes) in headers {
            let linked = links(&cid, &bytes);
            fetched.insert(cid, (bytes, linked));
        }
        // Shared with the cache of recent blocks: the next tipsets' senders
        // resolve in the state this one brings.
        let blocks: Unwritten = fetched
            .iter()
            .map(|(cid, (bytes, _))| {
                let block: Arc<[u8]> = Arc::from(bytes.as_slice());
                self.recent.insert(*cid, block.clone());
                (*cid, block)
            })
            .collect();
        // Indexed from the blocks in hand (the store behind them), before
        // they are written: the tipset's messages and state are mostly new.
        let mut indices = WriteBatch::default();
        index_tipset(
            &Fetched {
                blocks: &fetched,
                unwritten,
                recent: &self.recent,
                store: StoreBlockstore(self.store.as_ref()),
            },
            &tipset,
            self.network,
            &mut indices,
        )?;
        let levels = children_first(
            fetched
                .into_iter()
                .map(|(cid, (bytes, linked))| (cid, bytes, linked))
                .collect::<Vec<Linked>>(),
        );
        let prepared = Prepared {
            tipset,
            levels,
            indices,
            objects: blocks.len(),
        };
        Ok((prepared, blocks))
    }

    /// Writes one prepared tipset: its blocks a level at a time, children
    /// first (whatever fails, every block stored has its whole subtree
    /// stored, and a retry descends into the rest), then its indices, then
    /// the head, from the head `version` this writer last saw (updated).
    fn write_tipset(
        &self,
        prepared: Prepared,
        version: &mut Option<u64>,
    ) -> Result<(), IngestError> {
        for level in prepared.levels {
            let cids: Vec<Cid> = level.iter().map(|(cid, _)| *cid).collect();
            self.store.write(WriteBatch {
                blocks: level,
                ..WriteBatch::default()
            })?;
            for cid in cids {
                self.known_complete.insert(cid, ());
            }
        }
        // The indices after the blocks they name; the head last.
        self.store.write(prepared.indices)?;
        self.move_head(&prepared.tipset, version)
    }

    /// Makes `tipset` the head, from the head `version` this writer last saw
    /// (updated), with the writer's term.
    fn move_head(&self, tipset: &TipSet, version: &mut Option<u64>) -> Result<(), IngestError> {
        let next = version.map_or(1, |version| version + 1);
        self.store.set_head(
            *version,
            Head {
                tipset: tipset.key().clone(),
                height: tipset.height(),
                version: next,
                term: self.term.load(Ordering::SeqCst),
            },
        )?;
        *version = Some(next);
        Ok(())
    }

    /// The store's head and its timestamp, for the Lease's report: `None`
    /// while the store has no head; an error when it cannot be read.
    fn head_report(&self) -> Result<Option<(i64, u64)>, crate::query::QueryError> {
        match crate::query::Chain::new(self.store.as_ref(), self.network).head() {
            Ok(head) => Ok(Some((head.height(), head.timestamp()))),
            Err(crate::query::QueryError::NoHead) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Syncs every `poll` until `stop` turns true; failures are logged and
    /// retried with a backoff up to a minute. With a Lease, only while holding
    /// it (a standby waits): a task of its own renews it every 10 s with the
    /// latest report, however long a sync takes, and the Lease is given up on
    /// the way out.
    pub async fn run(
        self: Arc<Self>,
        poll: Duration,
        lease: Option<LeaseHolder>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let report = Arc::new(Mutex::new(Report {
            head_height: None,
            head_time: None,
            leader: OK.into(),
            store: OK.into(),
        }));
        // Whether this ingester may write: always without a Lease; with one,
        // as its last renewal found.
        let (leading_tx, mut leading) = tokio::sync::watch::channel(lease.is_none());
        // Without a Lease nothing changes `leading`: its sender is kept for the
        // loop's lifetime, since a closed channel would end every wait at once.
        let mut _unchanging = None;
        let renewal = match lease.clone() {
            Some(lease) => Some(tokio::spawn(self.clone().keep_lease(
                lease,
                report.clone(),
                leading_tx,
            ))),
            None => {
                _unchanging = Some(leading_tx);
                None
            }
        };
        let mut backoff = poll;
        loop {
            let wait = if *leading.borrow_and_update() {
                // A sync can take long (a wide gap): on stop or on losing the
                // Lease, stop waiting for it. The abandoned sync cannot move
                // the head once another holder has a newer term: the store
                // checks the term inside its conditional update.
                tokio::select! {
                    wait = self.sync_step(&report, &mut backoff, poll) => wait,
                    Ok(_) = leading.wait_for(|leading| !*leading) => poll,
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            } else {
                poll
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        if let Some(renewal) = renewal {
            renewal.abort();
            let _ = renewal.await;
        }
        if let Some(lease) = &lease
            && *leading.borrow()
            && let Err(error) = lease.release().await
        {
            tracing::warn!("cannot release the Lease: {error}");
        }
    }

    /// Renews the Lease every [`LeaseHolder::RENEW_EVERY`] with the report as
    /// it stands, whatever the syncs are doing, and says whether it is held.
    async fn keep_lease(
        self: Arc<Self>,
        lease: LeaseHolder,
        report: Arc<Mutex<Report>>,
        leading: tokio::sync::watch::Sender<bool>,
    ) {
        loop {
            let ingester = self.clone();
            let head = tokio::task::spawn_blocking(move || ingester.head_report()).await;
            let current = {
                let mut report = report
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // An unknown head is no annotation rather than a stale one.
                (report.head_height, report.head_time) = (None, None);
                match head {
                    Ok(Ok(Some((height, time)))) => {
                        (report.head_height, report.head_time) = (Some(height), Some(time));
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => report.store = short(&error),
                    Err(error) => report.store = short(&error),
                }
                report.clone()
            };
            let holding = match lease.renew(&current).await {
                Ok(Some(term)) => {
                    self.term.store(term, Ordering::SeqCst);
                    true
                }
                Ok(None) => false,
                Err(error) => {
                    tracing::warn!("cannot renew the Lease: {error}");
                    false
                }
            };
            leading.send_replace(holding);
            tokio::time::sleep(LeaseHolder::RENEW_EVERY).await;
        }
    }

    /// One sync, its outcome logged, counted and put in the report; returns how
    /// long to wait before the next.
    async fn sync_step(
        self: &Arc<Self>,
        report: &Mutex<Report>,
        backoff: &mut Duration,
        poll: Duration,
    ) -> Duration {
        let ingester = self.clone();
        let outcome = tokio::task::spawn_blocking(move || ingester.sync_once()).await;
        let leader_answered = !matches!(outcome, Ok(Err(IngestError::Leader(_))));
        self.metrics
            .leader_connected
            .set(i64::from(leader_answered));
        let mut report = report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match outcome {
            Ok(Ok(synced)) => {
                if let Some(synced) = synced {
                    tracing::info!(
                        height = synced.height,
                        tipsets = synced.tipsets,
                        objects = synced.objects,
                        "ingested"
                    );
                }
                report.leader = OK.into();
                report.store = OK.into();
                *backoff = poll;
                poll
            }
            Ok(Err(error)) => {
                match error.component() {
                    Component::Store => report.store = short(&error),
                    // The store answered before the leader was asked.
                    Component::Leader => {
                        report.leader = short(&error);
                        report.store = OK.into();
                    }
                }
                tracing::warn!(
                    leader = self.leader.url(),
                    "sync failed, retrying in {backoff:?}: {error}"
                );
                let wait = *backoff;
                *backoff = (*backoff * 2).min(Duration::from_secs(60));
                wait
            }
            Err(error) => {
                report.store = short(&error);
                tracing::error!("sync task failed: {error}");
                poll
            }
        }
    }

    /// The leader's head, for tests and logs.
    pub fn leader_head(&self) -> Result<TipSetKey, IngestError> {
        Ok(self.leader.head()?)
    }
}

#[cfg(test)]
mod tests;
