//! `lotus-follower`: the follower fleet's one binary (DESIGN.md, "Fixed
//! interfaces"). Every flag can also come from `LOTUS_FOLLOWER_<FLAG>`.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};
use lotus_follower::{
    chain::{
        Network,
        upgrades::{Schedule, UpgradeHeight},
    },
    devnet::{Devnet, DevnetError, DevnetOptions, replay::Replay},
    import::{self, Progress},
    ingest::{Ingester, leader::Leader},
    metrics::Metrics,
    rpc::{
        Limits,
        auth::{Auth, Perm},
    },
    serve::{RunningServer, ServeOptions, parse_seconds, parse_size},
    store::{CqlLogin, Store, StoreUrl},
};
use tokio::task::JoinHandle;
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(name = "lotus-follower", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quick start: a devnet and the RPC on 127.0.0.1:1234, on an embedded store
    /// in a temporary directory (removed on exit).
    Dev(DevArgs),
    /// A leader producing a chain, serving Lotus JSON-RPC.
    Devnet(DevnetArgs),
    /// Load chain data from CARv1 files or FRC-0108 snapshots (plain or zstd, file or URL).
    Import(ImportArgs),
    /// Follow the leader and write the store (the single writer).
    Ingest(IngestArgs),
    /// Answer Lotus JSON-RPC from the store.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
    #[command(flatten)]
    cql: CqlArgs,
    /// The chain's network (mainnet, calibnet, devnet): address prefixes and chain ID.
    #[arg(long, env = "LOTUS_FOLLOWER_NETWORK", default_value = "mainnet")]
    network: Network,
    /// The RPC listener: `/rpc/v0`, `/rpc/v1`, `/health/livez`, `/health/readyz`.
    #[arg(long, env = "LOTUS_FOLLOWER_LISTEN", default_value = "127.0.0.1:1234")]
    listen: SocketAddr,
    /// Prometheus `/metrics`.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    metrics_listen: SocketAddr,
    /// The in-process block cache (suffixes: K, KiB, M, MiB, G, GiB).
    #[arg(long, env = "LOTUS_FOLLOWER_CACHE_SIZE", default_value = "512MiB", value_parser = parse_size)]
    cache_size: u64,
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_BODY_BYTES", default_value = "1MiB", value_parser = parse_size)]
    max_body_bytes: u64,
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_BATCH", default_value_t = 100)]
    max_batch: usize,
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_JSON_DEPTH", default_value_t = 32)]
    max_json_depth: usize,
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_SUBSCRIPTIONS", default_value_t = 16)]
    max_subscriptions: usize,
    /// How far below the head requests may reach, in epochs.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_MAX_LOOKBACK_EPOCHS",
        default_value_t = 2880
    )]
    max_lookback_epochs: i64,
    /// How long StateWaitMsg waits for confirmations, in seconds.
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_WAIT_SECONDS", default_value_t = 300)]
    max_wait_seconds: u64,
    /// Sets an upgrade's height, `Name=Height` (e.g. `FireHorse=5500000`), for an
    /// upgrade scheduled after this build; repeatable.
    #[arg(
        long = "upgrade-height",
        env = "LOTUS_FOLLOWER_UPGRADE_HEIGHTS",
        value_delimiter = ','
    )]
    upgrade_heights: Vec<UpgradeHeight>,
}

/// The CQL login, for `cql://` stores.
#[derive(Debug, Args)]
struct CqlArgs {
    /// The CQL role (the ingester's writes; a follower's may only SELECT).
    #[arg(long, env = "LOTUS_FOLLOWER_CQL_USERNAME")]
    cql_username: Option<String>,
    /// A file holding the role's password.
    #[arg(long, env = "LOTUS_FOLLOWER_CQL_PASSWORD_FILE")]
    cql_password_file: Option<std::path::PathBuf>,
    /// How long one CQL request may take (`10s`).
    #[arg(long, env = "LOTUS_FOLLOWER_CQL_REQUEST_TIMEOUT", value_parser = parse_seconds)]
    cql_request_timeout: Option<std::time::Duration>,
}

impl CqlArgs {
    fn login(&self) -> CqlLogin {
        CqlLogin {
            username: self.cql_username.clone(),
            password_file: self.cql_password_file.clone(),
            request_timeout: self.cql_request_timeout,
        }
    }
}

/// How the devnet's chain grows.
#[derive(Debug, Args)]
struct ChainArgs {
    /// Time between epochs (`30s`, `2m`).
    #[arg(long, env = "LOTUS_FOLLOWER_BLOCK_TIME", value_parser = parse_seconds)]
    block_time: Option<std::time::Duration>,
    /// Actors whose balance and nonce change each epoch.
    #[arg(long, env = "LOTUS_FOLLOWER_STATE_CHURN", default_value_t = 10)]
    state_churn: usize,
    /// Every this many tipsets, replace the last `--reorg-depth` with a heavier branch (0: never).
    #[arg(long, env = "LOTUS_FOLLOWER_REORG_EVERY", default_value_t = 0)]
    reorg_every: u64,
    #[arg(long, env = "LOTUS_FOLLOWER_REORG_DEPTH", default_value_t = 1)]
    reorg_depth: u64,
    /// Derives the accounts' keys; account 0 is left for you to sign with.
    #[arg(long, env = "LOTUS_FOLLOWER_SEED", default_value_t = 0)]
    seed: u64,
    /// Write the admin API token here at start (default: print it).
    #[arg(long, env = "LOTUS_FOLLOWER_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

impl ChainArgs {
    fn options(&self, default_block_time: std::time::Duration) -> DevnetOptions {
        DevnetOptions {
            seed: self.seed,
            block_time: self.block_time.unwrap_or(default_block_time),
            state_churn: self.state_churn,
            reorg_every: self.reorg_every,
            reorg_depth: self.reorg_depth,
        }
    }
}

#[derive(Debug, Args)]
struct DevnetArgs {
    /// `embedded:<dir>`: the devnet's own chain, continued after a restart.
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
    #[command(flatten)]
    cql: CqlArgs,
    #[arg(long, env = "LOTUS_FOLLOWER_LISTEN", default_value = "127.0.0.1:1234")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    metrics_listen: SocketAddr,
    /// Reveal a real chain from this CAR (file or URL) one epoch per block
    /// time instead of producing one; `--network` names its network.
    #[arg(long, env = "LOTUS_FOLLOWER_REPLAY")]
    replay: Option<String>,
    /// The replayed chain's network (address prefixes, chain ID).
    #[arg(long, env = "LOTUS_FOLLOWER_NETWORK", default_value = "devnet")]
    network: Network,
    #[command(flatten)]
    chain: ChainArgs,
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// The leader's RPC URL, e.g. `http://leader:1234/rpc/v1`.
    #[arg(long, env = "LOTUS_FOLLOWER_LEADER")]
    leader: String,
    /// A file holding a JWT for the leader.
    #[arg(long, env = "LOTUS_FOLLOWER_LEADER_TOKEN_FILE")]
    leader_token_file: Option<std::path::PathBuf>,
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
    #[command(flatten)]
    cql: CqlArgs,
    /// The chain's network (mainnet, calibnet, devnet).
    #[arg(long, env = "LOTUS_FOLLOWER_NETWORK", default_value = "mainnet")]
    network: Network,
    /// Refuse to follow across more epochs than this: bootstrap by `import` instead.
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_GAP", default_value_t = 2880)]
    max_gap: i64,
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    metrics_listen: SocketAddr,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Where the devnet leader itself answers (push messages there).
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_LEADER_LISTEN",
        default_value = "127.0.0.1:1235"
    )]
    leader_listen: SocketAddr,
    #[arg(long, env = "LOTUS_FOLLOWER_LISTEN", default_value = "127.0.0.1:1234")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    chain: ChainArgs,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
    #[command(flatten)]
    cql: CqlArgs,
    /// The chain's network (mainnet, calibnet, devnet).
    #[arg(long, env = "LOTUS_FOLLOWER_NETWORK", default_value = "mainnet")]
    network: Network,
    /// CAR files, snapshots or http(s) URLs, imported in order.
    #[arg(required = true)]
    inputs: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOTUS_FOLLOWER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Import(args) => run_import(args),
        Command::Serve(args) => run_serve(args),
        Command::Devnet(args) => match &args.replay {
            Some(car) => run_replay(&args, car),
            None => run_devnet(
                args.store.open(&args.cql.login()).map(Arc::from),
                args.listen,
                args.metrics_listen,
                args.chain.options(std::time::Duration::from_secs(30)),
                args.chain.token_file.as_deref(),
            ),
        },
        Command::Dev(args) => run_dev(args),
        Command::Ingest(args) => run_ingest(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut schedule = Schedule::of(args.network);
    for change in &args.upgrade_heights {
        schedule.set(change)?;
    }
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let options = ServeOptions {
        network: args.network,
        schedule,
        block_delay_secs: args.network.block_delay_secs(),
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        cache_bytes: args.cache_size,
        limits: Limits {
            max_body_bytes: usize::try_from(args.max_body_bytes)?,
            max_batch: args.max_batch,
            max_json_depth: args.max_json_depth,
            max_subscriptions: args.max_subscriptions,
        },
        max_lookback_epochs: args.max_lookback_epochs,
        max_wait: std::time::Duration::from_secs(args.max_wait_seconds),
        pool: None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = lotus_follower::serve::start(store, options).await?;
        info!(rpc = %server.rpc_address, metrics = ?server.metrics_address, "serving");
        tokio::signal::ctrl_c().await?;
        info!("shutting down: closing channels");
        server.stop().await;
        anyhow::Ok(())
    })
}

/// A devnet producing into `store` and serving it, with its pool behind an
/// admin token: the server and the producer, which run until `stop`.
async fn start_devnet(
    store: Arc<dyn Store>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    options: DevnetOptions,
    token_file: Option<&std::path::Path>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(RunningServer, JoinHandle<Result<(), DevnetError>>)> {
    let devnet = tokio::task::block_in_place(|| Devnet::open(store.clone(), options, None))?;
    let auth = Auth::random()?;
    let token = auth.token(Perm::Admin)?;
    match token_file {
        Some(path) => {
            write_private(path, &token)?;
            info!(path = %path.display(), "admin token written");
        }
        None => println!("admin token: {token}"),
    }
    let serve = ServeOptions {
        network: Network::Devnet,
        schedule: Schedule::of(Network::Devnet),
        block_delay_secs: devnet.block_secs(),
        listen,
        metrics_listen,
        cache_bytes: 64 << 20,
        limits: Limits::default(),
        // A leader answers for any height: the ingester walks back from the head.
        max_lookback_epochs: i64::MAX,
        max_wait: std::time::Duration::from_secs(300),
        pool: Some((Arc::new(devnet.pool()), auth)),
    };
    info!(head = devnet.head().height(), "devnet chain opened");
    let server = lotus_follower::serve::start(store, serve).await?;
    info!(rpc = %server.rpc_address, "serving the devnet");
    Ok((server, tokio::spawn(devnet.run(stop))))
}

/// Waits for Ctrl-C, or for `task` to end (with its error).
async fn until_interrupted<E: Into<anyhow::Error>>(
    task: &mut JoinHandle<Result<(), E>>,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        finished = task => finished?.map_err(Into::into),
    }
}

fn run_devnet(
    store: Result<Arc<dyn Store>, lotus_follower::store::StoreError>,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    options: DevnetOptions,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let store = store?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (server, mut producer) = start_devnet(
            store,
            listen,
            Some(metrics_listen),
            options,
            token_file,
            stopped,
        )
        .await?;
        let result = until_interrupted(&mut producer).await;
        let _ = stop.send(true);
        info!("shutting down: closing channels");
        server.stop().await;
        result
    })
}

fn run_ingest(args: IngestArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let token = args
        .leader_token_file
        .as_ref()
        .map(|path| std::fs::read_to_string(path).map(|text| text.trim().to_owned()))
        .transpose()?;
    let metrics = Metrics::new()?;
    let ingester = Arc::new(Ingester::new(
        store,
        Leader::new(&args.leader, token, std::time::Duration::from_secs(30)),
        args.network,
        args.max_gap,
        // The fencing term comes from the ingester's Lease once it takes one.
        1,
        metrics.clone(),
    ));
    tokio::runtime::Runtime::new()?.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (metrics_address, _) =
            lotus_follower::metrics::serve(args.metrics_listen, metrics, stopped.clone()).await?;
        info!(leader = %args.leader, metrics = %metrics_address, "ingesting");
        let mut following = tokio::spawn(async move {
            ingester.run(INGEST_POLL, stopped).await;
            anyhow::Ok(())
        });
        let result = until_interrupted(&mut following).await;
        let _ = stop.send(true);
        result
    })
}

/// How often the ingester asks the leader for its head.
const INGEST_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// `devnet --replay`: the CAR's chain revealed epoch by epoch, served read-only.
fn run_replay(args: &DevnetArgs, car: &str) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let replay = Replay::open(store.clone(), car, args.network)?;
    info!(
        from = replay.head().height(),
        to = replay.tipsets().last().map(|t| t.height()),
        "replaying"
    );
    let block_time = args
        .chain
        .block_time
        .unwrap_or(std::time::Duration::from_secs(30));
    let serve = ServeOptions {
        network: args.network,
        schedule: Schedule::of(args.network),
        block_delay_secs: block_time.as_secs(),
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        cache_bytes: 64 << 20,
        limits: Limits::default(),
        max_lookback_epochs: i64::MAX,
        max_wait: std::time::Duration::from_secs(300),
        pool: None,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let server = lotus_follower::serve::start(store, serve).await?;
        info!(rpc = %server.rpc_address, "serving the replay");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut replaying = tokio::spawn(replay.run(block_time, stopped));
        let result = until_interrupted(&mut replaying).await;
        let _ = stop.send(true);
        server.stop().await;
        result
    })
}

/// `dev`: a devnet leader, an ingester and a follower in one process, on two
/// throwaway embedded stores (the leader's and the follower's), with a short
/// block time; the follower answers on `--listen`.
fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("lotus-follower-dev-{}", std::process::id()));
    let open = |name: &str| -> anyhow::Result<Arc<dyn Store>> {
        let url: StoreUrl = format!("embedded:{}", dir.join(name).display())
            .parse()
            .map_err(anyhow::Error::msg)?;
        Ok(Arc::from(url.open(&CqlLogin::default())?))
    };
    let result = (|| {
        let (leader_store, follower_store) = (open("leader")?, open("follower")?);
        info!(stores = %dir.display(), "dev: a devnet leader, an ingester and a follower");
        tokio::runtime::Runtime::new()?.block_on(async {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (leader, mut producer) = start_devnet(
                leader_store,
                args.leader_listen,
                None,
                args.chain.options(std::time::Duration::from_secs(4)),
                args.chain.token_file.as_deref(),
                stopped.clone(),
            )
            .await?;
            let ingester = Arc::new(Ingester::new(
                follower_store.clone(),
                Leader::new(
                    &format!("http://{}/rpc/v1", leader.rpc_address),
                    None,
                    std::time::Duration::from_secs(10),
                ),
                Network::Devnet,
                i64::MAX,
                1,
                Metrics::new()?,
            ));
            tokio::spawn(ingester.run(INGEST_POLL, stopped.clone()));
            let follower = lotus_follower::serve::start(
                follower_store,
                ServeOptions {
                    network: Network::Devnet,
                    schedule: Schedule::of(Network::Devnet),
                    block_delay_secs: args
                        .chain
                        .options(std::time::Duration::from_secs(4))
                        .block_time
                        .as_secs(),
                    listen: args.listen,
                    metrics_listen: Some(args.metrics_listen),
                    cache_bytes: 64 << 20,
                    limits: Limits::default(),
                    max_lookback_epochs: 2880,
                    max_wait: std::time::Duration::from_secs(300),
                    pool: None,
                },
            )
            .await?;
            info!(
                follower = %follower.rpc_address,
                leader = %leader.rpc_address,
                "dev: query the follower; push messages to the leader with the admin token"
            );
            let result = until_interrupted(&mut producer).await;
            let _ = stop.send(true);
            follower.stop().await;
            leader.stop().await;
            result
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let store = args.store.open(&args.cql.login())?;
    for input in &args.inputs {
        info!(input, "importing");
        let mut show = |p: Progress| {
            let seconds = p.elapsed.as_secs_f64().max(1e-9);
            info!(
                blocks = p.blocks,
                megabytes = format!("{:.1}", p.bytes as f64 / 1e6),
                blocks_per_second = format!("{:.0}", p.blocks as f64 / seconds),
                "streaming"
            );
        };
        let report = import::import(store.as_ref(), input, args.network, &mut show)?;
        let seconds = report.elapsed.as_secs_f64().max(1e-9);
        info!(
            input,
            blocks = report.blocks,
            megabytes = format!("{:.2}", report.bytes as f64 / 1e6),
            seconds = format!("{seconds:.3}"),
            blocks_per_second = format!("{:.0}", report.blocks as f64 / seconds),
            megabytes_per_second = format!("{:.1}", report.bytes as f64 / 1e6 / seconds),
            tipsets = report.indexed.tipsets,
            complete_blocks = report.complete_blocks,
            partial_blocks = report.partial_blocks,
            head_height = report.head.height,
            head = %report.head.tipset,
            "imported"
        );
    }
    Ok(())
}
