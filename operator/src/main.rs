//! `lotus-follower-operator`: reconciles `LotusFollowerCluster` resources into a
//! follower fleet (DESIGN.md, "Operator"). `crdgen` prints the CRD; the
//! reconciler (`run`) arrives with the operator issue.

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
    match cli.command.unwrap_or(Command::Run) {
        Command::Crdgen => {
            print!("{}", lotus_follower_operator::crd_yaml()?);
            Ok(())
        }
        Command::Run => anyhow::bail!(
            "`run` is not implemented yet: the reconciler lands with the operator issue"
        ),
    }
}
