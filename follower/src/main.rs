//! `lotus-follower`: the follower fleet's one binary (DESIGN.md, "Fixed
//! interfaces"). Every flag can also come from `LOTUS_FOLLOWER_<FLAG>`.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};
use lotus_follower::{
    chain::{
        Network,
        upgrades::{Schedule, UpgradeHeight},
    },
    import::{self, Progress},
    rpc::Limits,
    serve::{ServeOptions, parse_size},
    store::{Store, StoreUrl},
};
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(name = "lotus-follower", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quick start: devnet, ingester and follower in one process on an embedded store.
    Dev,
    /// A leader producing a chain (or replaying a CAR), serving Lotus JSON-RPC.
    Devnet,
    /// Load chain data from CARv1 files or FRC-0108 snapshots (plain or zstd, file or URL).
    Import(ImportArgs),
    /// Follow the leader and write the store (the single writer).
    Ingest,
    /// Answer Lotus JSON-RPC from the store.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
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

#[derive(Debug, Args)]
struct ImportArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long, env = "LOTUS_FOLLOWER_STORE")]
    store: StoreUrl,
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
        other => Err(anyhow::anyhow!(
            "`{other:?}` is not implemented yet: it lands with its own issue"
        )),
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
    let store: Arc<dyn Store> = Arc::from(args.store.open()?);
    let options = ServeOptions {
        network: args.network,
        schedule,
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

fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
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
