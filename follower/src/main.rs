//! `lotus-follower`: the follower fleet's one binary (DESIGN.md, "Fixed
//! interfaces"). Each subcommand lands with its own issue; until then the binary
//! only knows its command line.

use clap::{Parser, Subcommand};

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
    /// Load chain data from CAR files or snapshots into the store.
    Import,
    /// Follow the leader and write the store (the single writer).
    Ingest,
    /// Answer Lotus JSON-RPC from the store.
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "`{:?}` is not implemented yet: it lands with its own issue",
        cli.command
    )
}
