//! `lotus-follower`: the follower fleet's one binary (DESIGN.md, "Fixed
//! interfaces"). Every flag can also come from `LOTUS_FOLLOWER_<FLAG>`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lotus_follower::{
    chain::Network,
    import::{self, Progress},
    store::StoreUrl,
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
    Serve,
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
