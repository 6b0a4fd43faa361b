//! The CQL backend: YugabyteDB's YCQL in production, Apache Cassandra in tests,
//! through the `scylla` driver. Only CQL both accept (DESIGN.md, "Store"):
//! simple primary keys, single-partition reads, no batches, no deletes, cells
//! under 1 MB (larger blocks are chunked), the head row written only with
//! lightweight transactions, consistency `QUORUM` set explicitly.
//!
//! The [`Store`] trait is synchronous; each call runs on the store's own small
//! runtime and the caller waits for it, so the store works from any thread.

use std::{future::Future, sync::Arc, time::Duration};

use cid::Cid;
use futures::{StreamExt, TryStreamExt, stream};
use fvm_shared::address::Address;
use scylla::{
    client::{
        caching_session::CachingSession, execution_profile::ExecutionProfile,
        session_builder::SessionBuilder,
    },
    policies::load_balancing::DefaultPolicy,
    statement::Consistency,
};

use super::{
    Head, Inclusion, NonceUse, Result, SCHEMA, SchemaVersion, Store, StoreError, WriteBatch,
    head_refusal,
};
use crate::chain::TipSetKey;

/// Cells stay well under the 1 MB both databases accept.
const CHUNK: usize = 512 << 10;
/// Heights share a partition in buckets of a day of epochs.
const HEIGHT_BUCKET: i64 = 2880;
/// Requests in flight at once within one call (a batch, a set of existence checks).
const PARALLEL_REQUESTS: usize = 64;

/// The schema, as idempotent statements (`IF NOT EXISTS`): migration 1.
const MIGRATION_1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS blocks (k blob, chunk int, chunks int, data blob, PRIMARY KEY ((k), chunk))",
    "CREATE TABLE IF NOT EXISTS partial_blocks (k blob, chunk int, chunks int, data blob, PRIMARY KEY ((k), chunk))",
    "CREATE TABLE IF NOT EXISTS tipsets_by_height (bucket bigint, height bigint, tipset blob, PRIMARY KEY ((bucket), height, tipset))",
    "CREATE TABLE IF NOT EXISTS tipset_keys (normalized blob PRIMARY KEY, canonical blob)",
    "CREATE TABLE IF NOT EXISTS inclusions (message blob, tipset blob, idx int, PRIMARY KEY ((message), tipset, idx))",
    "CREATE TABLE IF NOT EXISTS nonce_uses (sender blob, nonce bigint, message blob, tipset blob, PRIMARY KEY ((sender, nonce), message, tipset))",
    "CREATE TABLE IF NOT EXISTS head (id int PRIMARY KEY, tipset blob, height bigint, version bigint, term bigint)",
    "CREATE TABLE IF NOT EXISTS schema_version (id int PRIMARY KEY, version int, min_reader int)",
];

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct CqlOptions {
    pub contact_points: Vec<String>,
    /// The keyspace holding the chain; it must exist (the database's owner
    /// chooses its replication).
    pub keyspace: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub request_timeout: Duration,
    /// The datacenter whose nodes are asked first.
    pub local_dc: Option<String>,
    /// Reported node address → the address to connect to instead.
    pub address_map: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// TLS, verifying the database's certificate against this CA (PEM);
    /// plaintext when absent.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// A TLS client configuration trusting only the CA in `ca_file`. The driver
/// connects by address, so the database's certificate must name each node's
/// IP address (a subjectAltName), as YugabyteDB's and Cassandra's node
/// certificates do when issued per node.
pub fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let unreadable = |error: &dyn std::fmt::Display| {
        StoreError::Backend(format!(
            "cannot read the CA certificate {} (--cql-tls-ca-file): {error}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
        roots
            .add(certificate.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"it holds no certificate"));
    }
    // The provider is named: both ring (kube's) and aws-lc-rs may be linked,
    // and rustls then refuses to guess.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(backend)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

pub struct CqlStore {
    session: Arc<CachingSession>,
    /// Fault injection for tests: fails row writes into `blocks` below the
    /// [`Store`] trait, as a database failing mid-batch would.
    fault: Arc<WriteFault>,
    /// `None` only while dropping: the runtime is shut down in the background,
    /// since a store may be dropped inside another runtime.
    runtime: Option<tokio::runtime::Runtime>,
    keyspace: String,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore")
            .field("keyspace", &self.keyspace)
            .finish()
    }
}

impl Drop for CqlStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn block_key(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

/// CQL has no unsigned integers: versions, terms and nonces travel as bigint.
fn signed(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| corrupt(what, format!("{value} does not fit a bigint")))
}

fn unsigned(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("{value} is negative")))
}

type HeadRow = (Vec<u8>, i64, i64, i64);

impl CqlStore {
    pub fn connect(options: &CqlOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cql-store")
            .enable_all()
            .build()
            .map_err(backend)?;
        let mut policy = DefaultPolicy::builder();
        if let Some(dc) = &options.local_dc {
            policy = policy.prefer_datacenter(dc.clone());
        }
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::Quorum)
            .request_timeout(Some(options.request_timeout))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&options.contact_points)
            .default_execution_profile_handle(profile.into_handle())
            .use_keyspace(&options.keyspace, false);
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            builder = builder.user(user, password);
        }
        if !options.address_map.is_empty() {
            let map: std::collections::HashMap<_, _> =
                options.address_map.iter().copied().collect();
            builder = builder.address_translator(Arc::new(map));
        }
        if let Some(ca_file) = &options.tls_ca_file {
            builder = builder.tls_context(Some(tls_config(ca_file)?));
        }
        let session = runtime.block_on(builder.build()).map_err(|error| {
            backend(format!(
                "cannot connect to {:?}: {error}",
                options.contact_points
            ))
        })?;
        Ok(Self {
            session: Arc::new(CachingSession::from(session, 64)),
            fault: Arc::default(),
            runtime: Some(runtime),
            keyspace: options.keyspace.clone(),
        })
    }

    /// Fails one row write into the `blocks` table (complete blocks): the one
    /// after the next `rows`, as a database would that fails one INSERT of a
    /// batch while the others succeed. Below the [`Store`] trait, for
    /// fault-injection tests; [`Self::heal`] disarms it.
    pub fn fail_one_block_write_after(&self, rows: u64) {
        self.fault.arm(rows);
    }

    /// Disarms an injected fault.
    pub fn heal(&self) {
        self.fault.disarm();
    }

    /// Runs a query future to completion on the calling thread. The driver's
    /// connections are tasks on the store's own runtime, so the future only
    /// waits for their answers; its timers need a runtime's context, the
    /// store's. No thread hands the work to another and back: a read is one
    /// wake-up, not three (this is the path of every synchronous read, such
    /// as a state-tree walk's). Works on any thread, as `Store` promises.
    fn run<T, F>(&self, work: impl FnOnce(Arc<CachingSession>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| backend("the store is closed"))?;
        let _context = runtime.enter();
        futures::executor::block_on(work(self.session.clone()))
    }

    /// Creates the tables of the current schema (idempotent) without
    /// recording the schema version: `migrate` does both.
    pub fn create_tables(&self) -> Result<()> {
        self.run(|session| async move {
            for statement in MIGRATION_1 {
                session
                    .get_session()
                    .query_unpaged(*statement, ())
                    .await
                    .map_err(backend)?;
            }
            Ok(())
        })
    }
}

/// An injected write fault: how many `blocks` rows pass before one fails,
/// `u64::MAX` when none is armed.
#[derive(Debug)]
struct WriteFault {
    countdown: std::sync::atomic::AtomicU64,
}

impl Default for WriteFault {
    fn default() -> Self {
        Self {
            countdown: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl WriteFault {
    fn arm(&self, rows: u64) {
        self.countdown
            .store(rows.min(u64::MAX - 1), std::sync::atomic::Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.countdown
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails the armed row as a timed-out INSERT does: only after a while,
    /// with the rows sent meanwhile going through.
    async fn admit(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let before = self
            .countdown
            .fetch_update(SeqCst, SeqCst, |left| match left {
                u64::MAX => None,
                0 => Some(u64::MAX),
                left => Some(left - 1),
            });
        if before != Ok(0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(backend("injected write fault: the INSERT timed out"))
    }
}

/// The two tables holding blocks, each with its statements spelled out once
/// (the driver caches prepared statements by their text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockTable {
    /// `blocks`: stored with everything they link to.
    Complete,
    /// `partial_blocks`: readable, never trusted as complete.
    Partial,
}

struct BlockStatements {
    present: &'static str,
    fetch: &'static str,
    insert: &'static str,
}

impl BlockTable {
    fn statements(self) -> &'static BlockStatements {
        match self {
            BlockTable::Complete => &BlockStatements {
                present: "SELECT chunk, chunks FROM blocks WHERE k = ?",
                fetch: "SELECT chunk, chunks, data FROM blocks WHERE k = ?",
                insert: "INSERT INTO blocks (k, chunk, chunks, data) VALUES (?, ?, ?, ?)",
            },
            BlockTable::Partial => &BlockStatements {
                present: "SELECT chunk, chunks FROM partial_blocks WHERE k = ?",
                fetch: "SELECT chunk, chunks, data FROM partial_blocks WHERE k = ?",
                insert: "INSERT INTO partial_blocks (k, chunk, chunks, data) VALUES (?, ?, ?, ?)",
            },
        }
    }
}

/// Whether a block is stored whole in `table`: its chunk numbers and count
/// only, never its data.
async fn block_present(session: &CachingSession, table: BlockTable, cid: &Cid) -> Result<bool> {
    let rows = session
        .execute_unpaged(table.statements().present, (block_key(cid),))
        .await
        .map_err(backend)?
        .into_rows_result()
        .map_err(backend)?;
    let mut found = 0usize;
    let mut count = None;
    for row in rows.rows::<(i32, i32)>().map_err(backend)? {
        let (_, chunks) = row.map_err(backend)?;
        count.get_or_insert(chunks);
        found += 1;
    }
    Ok(count.is_some_and(|count| usize::try_from(count).ok() == Some(found)))
}

/// A block's chunks, joined. A block is there once every chunk is: a reader
/// racing the writer sees it absent, never cut short.
async fn fetch_block(
    session: &CachingSession,
    table: BlockTable,
    cid: &Cid,
) -> Result<Option<Vec<u8>>> {
    let rows = session
        .execute_unpaged(table.statements().fetch, (block_key(cid),))
        .await
        .map_err(backend)?
        .into_rows_result()
        .map_err(backend)?;
    let mut chunks: Vec<(i32, i32, Vec<u8>)> = rows
        .rows::<(i32, i32, Vec<u8>)>()
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let Some(&(_, count, _)) = chunks.first() else {
        return Ok(None);
    };
    if usize::try_from(count).ok() != Some(chunks.len()) {
        return Ok(None);
    }
    // Nearly every block is one chunk: its data is the block, uncopied.
    if chunks.len() == 1 {
        return Ok(chunks.pop().map(|(_, _, data)| data));
    }
    Ok(Some(
        chunks.into_iter().flat_map(|(_, _, data)| data).collect(),
    ))
}

async fn write_block(
    session: &CachingSession,
    fault: &WriteFault,
    table: BlockTable,
    cid: &Cid,
    data: &[u8],
) -> Result<()> {
    let key = block_key(cid);
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![data]
    } else {
        data.chunks(CHUNK).collect()
    };
    let count = i32::try_from(pieces.len()).map_err(backend)?;
    for (index, piece) in pieces.into_iter().enumerate() {
        let index = i32::try_from(index).map_err(backend)?;
        if table == BlockTable::Complete {
            fault.admit().await?;
        }
        session
            .execute_unpaged(table.statements().insert, (&key, index, count, piece))
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// One row write of a batch, owned so the writes can run concurrently.
enum Row {
    Block(BlockTable, Cid, Vec<u8>),
    Tipset(i64, TipSetKey),
    Inclusion(Cid, Inclusion),
    NonceUse(Address, u64, NonceUse),
}

async fn write_row(session: &CachingSession, fault: &WriteFault, row: Row) -> Result<()> {
    match row {
        Row::Block(table, cid, data) => write_block(session, fault, table, &cid, &data).await,
        Row::Tipset(height, tipset) => {
            let canonical = tipset.to_bytes();
            session
                .execute_unpaged(
                    "INSERT INTO tipsets_by_height (bucket, height, tipset) VALUES (?, ?, ?)",
                    (height.div_euclid(HEIGHT_BUCKET), height, &canonical),
                )
                .await
                .map_err(backend)?;
            session
                .execute_unpaged(
                    "INSERT INTO tipset_keys (normalized, canonical) VALUES (?, ?)",
                    (tipset.normalized().to_bytes(), &canonical),
                )
                .await
                .map_err(backend)?;
            Ok(())
        }
        Row::Inclusion(message, inclusion) => {
            let index = i32::try_from(inclusion.index).map_err(backend)?;
            session
                .execute_unpaged(
                    "INSERT INTO inclusions (message, tipset, idx) VALUES (?, ?, ?)",
                    (message.to_bytes(), inclusion.tipset.to_bytes(), index),
                )
                .await
                .map_err(backend)?;
            Ok(())
        }
        Row::NonceUse(sender, nonce, used) => {
            session
                .execute_unpaged(
                    "INSERT INTO nonce_uses (sender, nonce, message, tipset) VALUES (?, ?, ?, ?)",
                    (
                        sender.to_bytes(),
                        signed(nonce, "nonce")?,
                        used.message.to_bytes(),
                        used.tipset.to_bytes(),
                    ),
                )
                .await
                .map_err(backend)?;
            Ok(())
        }
    }
}

async fn read_head(session: &CachingSession) -> Result<Option<Head>> {
    let rows = session
        .execute_unpaged(
            "SELECT tipset, height, version, term FROM head WHERE id = 0",
            (),
        )
        .await
        .map_err(backend)?
        .into_rows_result()
        .map_err(backend)?;
    let Some((tipset, height, version, term)) =
        rows.maybe_first_row::<HeadRow>().map_err(backend)?
    else {
        return Ok(None);
    };
    Ok(Some(Head {
        tipset: TipSetKey::from_bytes(&tipset).map_err(|e| corrupt("head", e))?,
        height,
        version: unsigned(version, "head version")?,
        term: unsigned(term, "head term")?,
    }))
}

/// What a lightweight transaction's answer says: applied, or refused with
/// the head's current version and term (absent when there is no head row).
enum Conditional {
    Applied,
    Refused {
        version: Option<i64>,
        term: Option<i64>,
    },
}

/// Reads an LWT's answer by column name (`[applied]`, then the current values
/// of the columns in its condition), as both Cassandra and YCQL name them.
fn conditional_outcome(
    result: &scylla::response::query_result::QueryRowsResult,
) -> Result<Conditional> {
    use scylla::value::CqlValue;
    let column = |name: &str| {
        result
            .column_specs()
            .iter()
            .position(|column| column.name() == name)
    };
    let applied_at = column("[applied]")
        .ok_or_else(|| backend("no [applied] column in the head update's answer"))?;
    let Some(row) = result
        .maybe_first_row::<scylla::value::Row>()
        .map_err(backend)?
    else {
        return Err(backend("no row in the head update's answer"));
    };
    let value = |at: Option<usize>| at.and_then(|at| row.columns.get(at).cloned().flatten());
    if matches!(value(Some(applied_at)), Some(CqlValue::Boolean(true))) {
        return Ok(Conditional::Applied);
    }
    let bigint = |name: &str| match value(column(name)) {
        Some(CqlValue::BigInt(value)) => Some(value),
        _ => None,
    };
    Ok(Conditional::Refused {
        version: bigint("version"),
        term: bigint("term"),
    })
}

/// Whether an error is the database refusing a statement as invalid: the
/// kind of error a query on a missing table gets (at prepare or execute).
fn is_invalid_request(error: &scylla::errors::ExecutionError) -> bool {
    use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
    let attempt = match error {
        ExecutionError::LastAttemptError(attempt) => attempt,
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt }) => {
            first_attempt
        }
        _ => return false,
    };
    matches!(attempt, RequestAttemptError::DbError(DbError::Invalid, _))
}

/// Whether the keyspace has this table, from the cluster's schema metadata
/// (refreshed first: another process may have just created it).
async fn has_table(session: &CachingSession, keyspace: &str, table: &str) -> Result<bool> {
    let session = session.get_session();
    session.refresh_metadata().await.map_err(backend)?;
    Ok(session
        .get_cluster_state()
        .get_keyspace(keyspace)
        .is_some_and(|found| found.tables.contains_key(table)))
}

/// A block, complete or partial: the complete table first, where nearly
/// every block is.
async fn fetch_any_block(session: &CachingSession, cid: &Cid) -> Result<Option<Vec<u8>>> {
    match fetch_block(session, BlockTable::Complete, cid).await? {
        Some(block) => Ok(Some(block)),
        None => fetch_block(session, BlockTable::Partial, cid).await,
    }
}

impl Store for CqlStore {
    fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        let cid = *cid;
        self.run(move |session| async move { fetch_any_block(&session, &cid).await })
    }

    /// The driver's requests are futures on any runtime (its connections'
    /// tasks stay on the store's own), so the caller's runtime awaits them.
    fn get_block_future(&self, cid: Cid) -> Option<super::BlockFuture> {
        let session = self.session.clone();
        Some(Box::pin(
            async move { fetch_any_block(&session, &cid).await },
        ))
    }

    fn has_block(&self, cid: &Cid) -> Result<bool> {
        let cid = *cid;
        self.run(move |session| async move {
            Ok(block_present(&session, BlockTable::Complete, &cid).await?
                || block_present(&session, BlockTable::Partial, &cid).await?)
        })
    }

    fn has_complete_block(&self, cid: &Cid) -> Result<bool> {
        let cid = *cid;
        self.run(
            move |session| async move { block_present(&session, BlockTable::Complete, &cid).await },
        )
    }

    fn complete_blocks(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        let cids = cids.to_vec();
        self.run(move |session| async move {
            stream::iter(cids)
                .map(|cid| {
                    let session = session.clone();
                    async move { block_present(&session, BlockTable::Complete, &cid).await }
                })
                .buffered(PARALLEL_REQUESTS)
                .try_collect()
                .await
        })
    }

    fn tipsets_at_height(&self, height: i64) -> Result<Vec<TipSetKey>> {
        self.run(move |session| async move {
            let rows = session
                .execute_unpaged(
                    "SELECT tipset FROM tipsets_by_height WHERE bucket = ? AND height = ?",
                    (height.div_euclid(HEIGHT_BUCKET), height),
                )
                .await
                .map_err(backend)?
                .into_rows_result()
                .map_err(backend)?;
            rows.rows::<(Vec<u8>,)>()
                .map_err(backend)?
                .map(|row| {
                    let (key,) = row.map_err(backend)?;
                    TipSetKey::from_bytes(&key).map_err(|e| corrupt("tipset by height", e))
                })
                .collect()
        })
    }

    fn tipset_key(&self, cids: &TipSetKey) -> Result<Option<TipSetKey>> {
        let normalized = cids.normalized().to_bytes();
        self.run(move |session| async move {
            let rows = session
                .execute_unpaged(
                    "SELECT canonical FROM tipset_keys WHERE normalized = ?",
                    (normalized,),
                )
                .await
                .map_err(backend)?
                .into_rows_result()
                .map_err(backend)?;
            rows.maybe_first_row::<(Vec<u8>,)>()
                .map_err(backend)?
                .map(|(key,)| TipSetKey::from_bytes(&key).map_err(|e| corrupt("tipset key", e)))
                .transpose()
        })
    }

    fn inclusions(&self, message: &Cid) -> Result<Vec<Inclusion>> {
        let message = message.to_bytes();
        self.run(move |session| async move {
            let rows = session
                .execute_unpaged(
                    "SELECT tipset, idx FROM inclusions WHERE message = ?",
                    (message,),
                )
                .await
                .map_err(backend)?
                .into_rows_result()
                .map_err(backend)?;
            let mut found: Vec<Inclusion> = rows
                .rows::<(Vec<u8>, i32)>()
                .map_err(backend)?
                .map(|row| {
                    let (tipset, index) = row.map_err(backend)?;
                    Ok(Inclusion {
                        tipset: TipSetKey::from_bytes(&tipset)
                            .map_err(|e| corrupt("inclusion", e))?,
                        index: u32::try_from(index).map_err(|e| corrupt("inclusion", e))?,
                    })
                })
                .collect::<Result<_>>()?;
            found.sort();
            Ok(found)
        })
    }

    fn nonce_uses(&self, sender: &Address, nonce: u64) -> Result<Vec<NonceUse>> {
        let sender = sender.to_bytes();
        let nonce = signed(nonce, "nonce")?;
        self.run(move |session| async move {
            let rows = session
                .execute_unpaged(
                    "SELECT message, tipset FROM nonce_uses WHERE sender = ? AND nonce = ?",
                    (sender, nonce),
                )
                .await
                .map_err(backend)?
                .into_rows_result()
                .map_err(backend)?;
            let mut found: Vec<NonceUse> = rows
                .rows::<(Vec<u8>, Vec<u8>)>()
                .map_err(backend)?
                .map(|row| {
                    let (message, tipset) = row.map_err(backend)?;
                    Ok(NonceUse {
                        message: Cid::try_from(message.as_slice())
                            .map_err(|e| corrupt("nonce use", e))?,
                        tipset: TipSetKey::from_bytes(&tipset)
                            .map_err(|e| corrupt("nonce use", e))?,
                    })
                })
                .collect::<Result<_>>()?;
            found.sort();
            Ok(found)
        })
    }

    fn head(&self) -> Result<Option<Head>> {
        self.run(|session| async move { read_head(&session).await })
    }

    fn schema(&self) -> Result<Option<SchemaVersion>> {
        let keyspace = self.keyspace.clone();
        self.run(|session| async move {
            let result = session
                .execute_unpaged(
                    "SELECT version, min_reader FROM schema_version WHERE id = 0",
                    (),
                )
                .await;
            let rows = match result {
                Ok(result) => result.into_rows_result().map_err(backend)?,
                // No schema yet is told by kind and confirmed from the schema
                // metadata, never guessed from an error's text.
                Err(error)
                    if is_invalid_request(&error)
                        && !has_table(&session, &keyspace, "schema_version").await? =>
                {
                    return Ok(None);
                }
                Err(error) => return Err(backend(error)),
            };
            Ok(rows.maybe_first_row::<(i32, i32)>().map_err(backend)?.map(
                |(version, min_reader)| SchemaVersion {
                    version: version.max(0) as u32,
                    min_reader: min_reader.max(0) as u32,
                },
            ))
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Blocks first, indices after: an index never names a block a reader
        // cannot find. (The head moves separately, after the whole batch.)
        let blocks: Vec<Row> = batch
            .blocks
            .into_iter()
            .map(|(cid, data)| Row::Block(BlockTable::Complete, cid, data))
            .chain(
                batch
                    .partial_blocks
                    .into_iter()
                    .map(|(cid, data)| Row::Block(BlockTable::Partial, cid, data)),
            )
            .collect();
        let indices: Vec<Row> = batch
            .tipsets
            .into_iter()
            .map(|(height, tipset)| Row::Tipset(height, tipset))
            .chain(
                batch
                    .inclusions
                    .into_iter()
                    .map(|(message, inclusion)| Row::Inclusion(message, inclusion)),
            )
            .chain(
                batch
                    .nonce_uses
                    .into_iter()
                    .map(|(sender, nonce, used)| Row::NonceUse(sender, nonce, used)),
            )
            .collect();
        let fault = self.fault.clone();
        self.run(move |session| async move {
            for rows in [blocks, indices] {
                stream::iter(rows)
                    .map(|row| write_row(&session, &fault, row))
                    .buffer_unordered(PARALLEL_REQUESTS)
                    .try_collect::<()>()
                    .await?;
            }
            Ok(())
        })
    }

    fn set_head(&self, expected_version: Option<u64>, head: Head) -> Result<()> {
        if let Some(expected) = expected_version
            && head.version <= expected
        {
            return Err(StoreError::VersionNotGrowing {
                current: expected,
                attempted: head.version,
            });
        }
        let normalized = head.tipset.normalized();
        if self.tipset_key(&normalized)?.is_none() {
            return Err(StoreError::UnknownTipSet(head.tipset));
        }
        self.run(move |session| async move {
            let values = (
                head.tipset.to_bytes(),
                head.height,
                signed(head.version, "head version")?,
                signed(head.term, "head term")?,
            );
            // One lightweight transaction decides, with nothing read before
            // it: the head is still at the version this writer started from,
            // and the writer's term is not older than the head's. So a deposed
            // writer is refused by the database itself, whatever it believes.
            let result = match expected_version {
                None => session
                    .execute_unpaged(
                        "INSERT INTO head (id, tipset, height, version, term) VALUES (0, ?, ?, ?, ?) IF NOT EXISTS",
                        values,
                    )
                    .await,
                Some(expected) => session
                    .execute_unpaged(
                        "UPDATE head SET tipset = ?, height = ?, version = ?, term = ? WHERE id = 0 IF version = ? AND term <= ?",
                        (values.0, values.1, values.2, values.3, signed(expected, "head version")?, values.3),
                    )
                    .await,
            }
            .map_err(backend)?
            .into_rows_result()
            .map_err(backend)?;
            match conditional_outcome(&result)? {
                Conditional::Applied => Ok(()),
                Conditional::Refused { version, term } => {
                    let found = match (version, term) {
                        (Some(version), Some(term)) => Some((
                            unsigned(version, "head version")?,
                            unsigned(term, "head term")?,
                        )),
                        _ => None,
                    };
                    Err(head_refusal(expected_version, head.term, found))
                }
            }
        })
    }

    fn migrate(&self) -> Result<SchemaVersion> {
        let current = self.schema()?;
        if current.is_some_and(|schema| schema.version >= SCHEMA.version) {
            return self.check_readable();
        }
        self.create_tables()?;
        self.run(|session| async move {
            session
                .get_session()
                .query_unpaged(
                    "INSERT INTO schema_version (id, version, min_reader) VALUES (0, ?, ?)",
                    (
                        i32::try_from(SCHEMA.version).map_err(backend)?,
                        i32::try_from(SCHEMA.min_reader).map_err(backend)?,
                    ),
                )
                .await
                .map_err(backend)?;
            Ok(SCHEMA)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tls_config;

    /// `--cql-tls-ca-file` takes a PEM CA; an unreadable or empty file is
    /// refused naming the file and the flag. (The handshake itself is tested
    /// against the test bed's Cassandra, whose client TLS is on:
    /// `e2e/tests/fleet_processes.rs`.)
    #[test]
    fn the_ca_file_is_read_or_refused_with_its_name() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.crt");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
            ])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
            ])
            .arg("-keyout")
            .arg(dir.path().join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output()?;
        anyhow::ensure!(made.status.success(), "openssl: {made:?}");
        tls_config(&ca)?;

        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "")?;
        let missing = dir.path().join("missing.crt");
        for bad in [&empty, &missing] {
            let error = tls_config(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(&bad.display().to_string()) && error.contains("--cql-tls-ca-file"),
                "{error}"
            );
        }
        Ok(())
    }
}
