//! `lotus-follower-operator`: reconciles `LotusFollowerCluster` resources into a
//! follower fleet (DESIGN.md, "Operator"). The reconciler and the CRD arrive with
//! the operator issue; until then the binary only knows its command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lotus-follower-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run,
    /// Print the LotusFollowerCluster CustomResourceDefinition as YAML.
    Crdgen,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    anyhow::bail!("`{command:?}` is not implemented yet: the operator lands with its own issue")
}
