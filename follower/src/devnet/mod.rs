//! `lotus-follower devnet`: a leader that produces its own chain (network
//! `devnet`) into a store, epoch by epoch on the wall clock, with value
//! transfers between its accounts, messages pushed over RPC, null rounds,
//! growing tipsets and reorgs. The serve layer answers the Lotus API from the
//! same store; `MpoolPush` and friends reach the pool here.

pub mod api_secret;
pub mod keys;
pub mod mpool;
mod overlay;
pub mod produce;
pub mod replay;
pub mod state;

use std::{collections::HashSet, sync::Arc, time::Duration};

use fvm_shared::{address::Address, econ::TokenAmount};

use self::{
    keys::{Account, KeyError},
    mpool::Mpool,
    overlay::Overlay,
    produce::{Draft, ProduceError},
    state::StateWriter,
};
use crate::{
    chain::{Message, Network, SignedMessage, TipSet, cbor::blake2b_256},
    import::{IndexError, index_tipset, load_tipset},
    query::{Chain, QueryError},
    rpc::methods::mpool::MessagePool,
    store::{Head, Store, StoreError, WriteBatch},
};

/// The devnet is the only writer of its store.
const TERM: u64 = 1;
/// What each genesis account holds.
const GENESIS_BALANCE_FIL: u64 = 1_000_000;
/// What each of the devnet's own transfers moves.
const TRANSFER_ATTO: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Derives the accounts' keys (account 0 is left to users and tests).
    pub seed: u64,
    pub block_time: Duration,
    /// Actors whose balance and nonce change each epoch (two per transfer).
    pub state_churn: usize,
    /// Every this many tipsets, replace the last `reorg_depth` with a heavier
    /// branch (0: never).
    pub reorg_every: u64,
    pub reorg_depth: u64,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            block_time: Duration::from_secs(30),
            state_churn: 10,
            reorg_every: 0,
            reorg_depth: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("the store holds another network's chain (its genesis state has no devnet init actor)")]
    NotADevnet,
    #[error("replay: {0}")]
    Replay(String),
    #[error("the store's devnet differs from these options: {0}")]
    Mismatch(String),
}

/// What a step did: for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the epoch's tipset exists already.
    Idle,
    NullRound(i64),
    Produced {
        height: i64,
        blocks: usize,
        messages: usize,
        /// IPLD blocks written: headers, message lists, messages, receipts and
        /// the changed state-tree nodes.
        objects: usize,
    },
}

#[derive(Debug)]
pub struct Devnet {
    store: Arc<dyn Store>,
    options: DevnetOptions,
    accounts: Vec<Account>,
    mpool: Arc<Mpool>,
    head: TipSet,
    head_version: u64,
    genesis_time: u64,
    produced: u64,
    reorgs: u64,
}

/// A pseudo-random byte for `label`: the devnet's choices (null rounds, block
/// counts) are reproducible from its seed.
fn roll(seed: u64, label: &str, height: i64) -> u8 {
    blake2b_256(format!("{seed}/{label}/{height}").as_bytes())[0]
}

/// 1–5 blocks, mostly one or two, as on a real network.
fn block_count(seed: u64, height: i64, salt: u64) -> usize {
    match roll(seed, &format!("blocks/{salt}"), height) {
        0..=99 => 1,
        100..=169 => 2,
        170..=219 => 3,
        220..=244 => 4,
        _ => 5,
    }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The wall clock in milliseconds: epochs may be shorter than a second.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The block time in milliseconds, at least 1.
fn block_ms(options: &DevnetOptions) -> u64 {
    u64::try_from(options.block_time.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Epoch `height`'s start in whole seconds: the epoch's start in milliseconds,
/// rounded down, so a sub-second devnet stamps several epochs with one second.
fn epoch_start_secs(genesis_secs: u64, block_ms: u64, height: i64) -> u64 {
    let offset_ms = u64::try_from(height.max(0))
        .unwrap_or(0)
        .saturating_mul(block_ms);
    genesis_secs + offset_ms / 1000
}

impl Devnet {
    /// Opens the devnet on `store`: its chain if it has one, otherwise a new
    /// genesis stamped `genesis_time` (seconds; `None`: now).
    pub fn open(
        store: Arc<dyn Store>,
        options: DevnetOptions,
        genesis_time: Option<u64>,
    ) -> Result<Self, DevnetError> {
        store.migrate()?;
        let count = (options.state_churn + 2).max(8) as u64;
        let accounts = (0..count)
            .map(|index| Account::derive(options.seed, index))
            .collect::<Result<Vec<_>, _>>()?;
        let (head, head_version) = match store.head()? {
            Some(head) => {
                let tipset = load_tipset(store.as_ref(), &head.tipset)?
                    .ok_or_else(|| StoreError::UnknownTipSet(head.tipset.clone()))?;
                (tipset, head.version)
            }
            None => {
                let overlay = Overlay::new(store.as_ref());
                let addresses: Vec<Address> = accounts.iter().map(|a| a.address).collect();
                let genesis = produce::genesis(
                    &overlay,
                    &addresses,
                    &TokenAmount::from_whole(GENESIS_BALANCE_FIL),
                    genesis_time.unwrap_or_else(now_secs),
                )?;
                let (version, _) = write(store.as_ref(), overlay, &genesis, None)?;
                (genesis, version)
            }
        };
        let chain = Chain::new(store.as_ref(), Network::Devnet);
        let genesis = chain.genesis()?;
        if chain.network_name(&genesis)? != state::NETWORK_NAME {
            return Err(DevnetError::NotADevnet);
        }
        // A restart must keep the chain's clock and keys: another block time
        // would put the clock's epoch below the head, another seed would leave
        // account 0 unfunded.
        let block_ms = block_ms(&options);
        if head.timestamp() != epoch_start_secs(genesis.timestamp(), block_ms, head.height()) {
            return Err(DevnetError::Mismatch(format!(
                "its block time is not {:?} (the head at height {} is stamped {})",
                options.block_time,
                head.height(),
                head.timestamp()
            )));
        }
        if chain.lookup_id(&accounts[0].address, &genesis).is_err() {
            return Err(DevnetError::Mismatch(format!(
                "it was created with another --seed than {}",
                options.seed
            )));
        }
        Ok(Self {
            store,
            options,
            accounts,
            mpool: Arc::default(),
            head,
            head_version,
            genesis_time: genesis.timestamp(),
            produced: 0,
            reorgs: 0,
        })
    }

    pub fn head(&self) -> &TipSet {
        &self.head
    }

    /// The pool for the RPC server's `MpoolPush` and `MpoolGetNonce`.
    pub fn pool(&self) -> DevnetPool {
        DevnetPool {
            store: self.store.clone(),
            mpool: self.mpool.clone(),
        }
    }

    /// The block time as `Version`'s `BlockDelaySecs` reports it: whole
    /// seconds, at least 1 (Lotus's field is an integer; a sub-second devnet
    /// reports 1).
    pub fn block_secs(&self) -> u64 {
        self.options.block_time.as_secs().max(1)
    }

    /// The epoch the wall clock (in seconds) is in.
    pub fn epoch_at(&self, now: u64) -> i64 {
        self.epoch_at_ms(now.saturating_mul(1000))
    }

    /// The epoch the wall clock (in milliseconds) is in: epochs count from
    /// elapsed milliseconds, so block times below a second work.
    pub fn epoch_at_ms(&self, now_ms: u64) -> i64 {
        let since = now_ms.saturating_sub(self.genesis_time.saturating_mul(1000));
        i64::try_from(since / block_ms(&self.options)).unwrap_or(i64::MAX)
    }

    /// When epoch `height` starts, in whole seconds (header timestamps are
    /// seconds, as in Lotus).
    pub fn epoch_start(&self, height: i64) -> u64 {
        epoch_start_secs(self.genesis_time, block_ms(&self.options), height)
    }

    /// When epoch `height` starts, in milliseconds.
    fn epoch_start_ms(&self, height: i64) -> u64 {
        self.genesis_time.saturating_mul(1000)
            + u64::try_from(height.max(0)).unwrap_or(0) * block_ms(&self.options)
    }

    /// Produces the tipset of the epoch the clock (seconds) is in, unless it
    /// exists, or the epoch is a null round. Epochs skipped while the devnet
    /// was down are null rounds too.
    pub fn step(&mut self, now: u64) -> Result<Step, DevnetError> {
        self.step_ms(now.saturating_mul(1000))
    }

    /// [`Devnet::step`] with the clock in milliseconds.
    pub fn step_ms(&mut self, now_ms: u64) -> Result<Step, DevnetError> {
        let height = self.epoch_at_ms(now_ms);
        if height <= self.head.height() {
            return Ok(Step::Idle);
        }
        // About one epoch in twenty is a null round.
        if roll(self.options.seed, "null", height) < 13 {
            return Ok(Step::NullRound(height));
        }
        let step = self.produce(height)?;
        self.produced += 1;
        let every = self.options.reorg_every;
        if every > 0 && self.produced.is_multiple_of(every) {
            self.reorg(self.options.reorg_depth)?;
        }
        Ok(step)
    }

    /// Builds and writes the tipset at `height` on the head, with the pool's
    /// ready messages and the devnet's own transfers, and moves the head to it.
    pub fn produce(&mut self, height: i64) -> Result<Step, DevnetError> {
        let overlay = Overlay::new(self.store.as_ref());
        let executed = produce::execute(&overlay, &self.head)?;
        let tree = StateWriter::load(&overlay, &executed.0)?;
        let nonce = |address: &Address| -> u64 {
            tree.lookup(address)
                .ok()
                .flatten()
                .and_then(|id| tree.actor(id).ok().flatten())
                .map_or(0, |actor| actor.sequence)
        };
        let mut messages = self.mpool.take_ready(nonce);
        let churn = self.churn(height, &nonce)?;
        // An account someone pushed from sits out this epoch's churn: two
        // messages with one nonce would leave one failing.
        let pushed: HashSet<Address> = messages.iter().map(|m| m.message.from).collect();
        messages.extend(
            churn
                .into_iter()
                .filter(|transfer| !pushed.contains(&transfer.message.from)),
        );
        self.mpool.included(&messages);
        let draft = Draft {
            height,
            blocks: block_count(self.options.seed, height, self.reorgs),
            messages,
            salt: self.reorgs,
            timestamp: self.epoch_start(height),
        };
        let tipset = produce::build(&overlay, &self.head, &draft, executed)?;
        let (version, objects) = write(
            self.store.as_ref(),
            overlay,
            &tipset,
            Some(self.head_version),
        )?;
        self.head_version = version;
        self.head = tipset;
        Ok(Step::Produced {
            height,
            blocks: self.head.blocks().count(),
            messages: draft.messages.len(),
            objects,
        })
    }

    /// The devnet's own traffic at `height`: `state_churn / 2` transfers between
    /// distinct accounts (never account 0), rotating through them.
    fn churn(
        &self,
        height: i64,
        nonce: &impl Fn(&Address) -> u64,
    ) -> Result<Vec<SignedMessage>, KeyError> {
        let pool = &self.accounts[1..];
        let pairs = (self.options.state_churn / 2).min(pool.len() / 2);
        let offset = (height.max(0) as usize * 2 * pairs) % pool.len();
        (0..pairs)
            .map(|pair| {
                let from = &pool[(offset + 2 * pair) % pool.len()];
                let to = &pool[(offset + 2 * pair + 1) % pool.len()];
                from.transfer(to.address, nonce(&from.address), TRANSFER_ATTO)
            })
            .collect()
    }

    /// The common fork: another block at the head's height, with the same
    /// parents, grows the head tipset {A} into {A, B} (heavier, so it becomes
    /// the head: ChainNotify reverts {A} and applies {A, B}).
    pub fn grow_head(&mut self) -> Result<(), DevnetError> {
        if self.head.height() == 0 || self.head.blocks().count() >= 5 {
            return Ok(());
        }
        let overlay = Overlay::new(self.store.as_ref());
        let draft = Draft {
            height: self.head.height(),
            blocks: 1,
            messages: Vec::new(),
            salt: self.reorgs,
            timestamp: self.head.timestamp(),
        };
        let mut headers: Vec<_> = self.head.blocks().cloned().collect();
        headers.push(produce::sibling_block(&overlay, &self.head, &draft)?);
        let tipset = TipSet::new(headers).map_err(ProduceError::from)?;
        (self.head_version, _) = write(
            self.store.as_ref(),
            overlay,
            &tipset,
            Some(self.head_version),
        )?;
        self.head = tipset;
        Ok(())
    }

    /// Replaces the last `depth` tipsets with a branch from their parent that
    /// carries the same messages in different, more numerous blocks (heavier),
    /// and moves the head to its tip. Returns whether it did.
    pub fn reorg(&mut self, depth: u64) -> Result<bool, DevnetError> {
        let chain = Chain::new(self.store.as_ref(), Network::Devnet);
        let mut replaced = Vec::new();
        let mut base = self.head.clone();
        for _ in 0..depth {
            if base.height() == 0 {
                break;
            }
            let parent = chain.parent(&base)?;
            replaced.push(base);
            base = parent;
        }
        // Each replaced tipset gets one more block (at most five): the branch is
        // heavier unless every one of them already had five.
        let old_blocks: usize = replaced.iter().map(|t| t.blocks().count()).sum();
        let new_blocks: usize = replaced
            .iter()
            .map(|t| (t.blocks().count() + 1).min(5))
            .sum();
        if new_blocks <= old_blocks {
            tracing::info!(
                depth,
                "no reorg: the tipsets to replace are as heavy as they get"
            );
            return Ok(false);
        }
        self.reorgs += 1;
        let overlay = Overlay::new(self.store.as_ref());
        let mut tip = base;
        let mut built = Vec::new();
        for old in replaced.iter().rev() {
            let messages = crate::chain::selection::tipset_messages(&overlay, old, Network::Devnet)
                .map_err(ProduceError::from)?
                .into_iter()
                .map(|included| match included.signed {
                    Some(signed) => signed,
                    None => self.resign_bls(included.message),
                })
                .collect();
            let draft = Draft {
                height: old.height(),
                blocks: (old.blocks().count() + 1).min(5),
                messages,
                salt: self.reorgs,
                timestamp: old.timestamp(),
            };
            let executed = produce::execute(&overlay, &tip)?;
            tip = produce::build(&overlay, &tip, &draft, executed)?;
            built.push(tip.clone());
        }
        let mut batch = WriteBatch::default();
        for tipset in &built {
            index_tipset(&overlay, tipset, Network::Devnet, &mut batch)?;
        }
        batch.blocks = overlay.into_blocks();
        self.store.write(batch)?;
        self.head_version = set_head(self.store.as_ref(), &tip, Some(self.head_version))?;
        self.head = tip;
        Ok(true)
    }

    /// A BLS message as the pool would hold it: signed by the sender's
    /// (BLS-shaped) key, which the devnet knows for its own accounts.
    fn resign_bls(&self, message: Message) -> SignedMessage {
        self.accounts
            .iter()
            .find(|account| account.address == message.from)
            .and_then(|account| account.sign(message.clone()).ok())
            .unwrap_or(SignedMessage {
                message,
                signature: fvm_shared::crypto::signature::Signature::new_bls(vec![0; 96]),
            })
    }

    /// Runs on the wall clock until `stop` turns true: a tipset at each epoch
    /// start, sometimes grown by a block half an epoch later.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), DevnetError> {
        loop {
            let step = tokio::task::block_in_place(|| self.step_ms(now_ms()))?;
            match step {
                Step::Produced {
                    height,
                    blocks,
                    messages,
                    objects,
                } => {
                    tracing::info!(height, blocks, messages, objects, "produced");
                }
                Step::NullRound(height) => tracing::info!(height, "null round"),
                Step::Idle => {}
            }
            let next = self.epoch_start_ms(self.epoch_at_ms(now_ms()) + 1);
            let half = block_ms(&self.options) / 2;
            let head = self.head.height();
            let grow = matches!(step, Step::Produced { .. })
                && roll(self.options.seed, "grow", head) < 26
                && half > 0;
            let wait = |until_ms: u64| {
                Duration::from_millis(until_ms.saturating_sub(now_ms()))
                    .max(Duration::from_millis(10))
            };
            if grow {
                tokio::select! {
                    _ = tokio::time::sleep(wait(next - half)) => {}
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                }
                tokio::task::block_in_place(|| self.grow_head())?;
                tracing::info!(
                    height = head,
                    blocks = self.head.blocks().count(),
                    "head tipset grew"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(wait(next)) => {}
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }

    /// The nonce the next message from `address` should carry.
    pub fn next_nonce(
        store: &dyn Store,
        mpool: &Mpool,
        address: &Address,
    ) -> Result<u64, DevnetError> {
        Ok(mpool.next_nonce(address, state_nonce(store, address)?))
    }

    /// Checks and queues a pushed message.
    pub fn push(store: &dyn Store, mpool: &Mpool, signed: SignedMessage) -> Result<(), String> {
        let nonce = state_nonce(store, &signed.message.from).map_err(|error| error.to_string())?;
        mpool.push(signed, nonce).map_err(|error| error.to_string())
    }
}

/// The devnet's pool as the RPC server sees it.
#[derive(Debug, Clone)]
pub struct DevnetPool {
    pub store: Arc<dyn Store>,
    pub mpool: Arc<Mpool>,
}

impl MessagePool for DevnetPool {
    fn push(&self, message: SignedMessage) -> Result<(), String> {
        Devnet::push(self.store.as_ref(), &self.mpool, message)
    }

    fn next_nonce(&self, address: &Address) -> Result<u64, String> {
        Devnet::next_nonce(self.store.as_ref(), &self.mpool, address)
            .map_err(|error| error.to_string())
    }
}

/// The sender's nonce in the newest state: the head's, with its messages executed.
fn state_nonce(store: &dyn Store, address: &Address) -> Result<u64, DevnetError> {
    let head = Chain::new(store, Network::Devnet).head()?;
    let overlay = Overlay::new(store);
    let (state, _) = produce::execute(&overlay, &head)?;
    let tree = StateWriter::load(&overlay, &state)?;
    Ok(match tree.lookup(address)? {
        Some(id) => tree.actor(id)?.map_or(0, |actor| actor.sequence),
        None => 0,
    })
}

/// Writes a tipset's blocks with its indices in one batch, then moves the head.
/// Returns the head's new version and how many blocks were written.
fn write(
    store: &dyn Store,
    overlay: Overlay<'_>,
    tipset: &TipSet,
    expected: Option<u64>,
) -> Result<(u64, usize), DevnetError> {
    let mut batch = WriteBatch::default();
    index_tipset(&overlay, tipset, Network::Devnet, &mut batch)?;
    batch.blocks = overlay.into_blocks();
    let objects = batch.blocks.len();
    store.write(batch)?;
    Ok((set_head(store, tipset, expected)?, objects))
}

fn set_head(store: &dyn Store, tipset: &TipSet, expected: Option<u64>) -> Result<u64, DevnetError> {
    let version = expected.map_or(1, |version| version + 1);
    store.set_head(
        expected,
        Head {
            tipset: tipset.key().clone(),
            height: tipset.height(),
            version,
            term: TERM,
        },
    )?;
    Ok(version)
}

#[cfg(test)]
mod tests;
