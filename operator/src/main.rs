//! `lotus-follower-operator`: reconciles `LotusFollowerCluster` resources into a
//! follower fleet (DESIGN.md, "Operator"). `crdgen` prints the CRD.

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
    Run {
        /// Watch only this namespace (default: all).
        #[arg(long, env = "LOTUS_FOLLOWER_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Print the LotusFollowerCluster CustomResourceDefinition as YAML.
    Crdgen,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { namespace: None }) {
        Command::Crdgen => {
            print!("{}", lotus_follower_operator::crd_yaml()?);
            Ok(())
        }
        Command::Run { namespace } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            tokio::runtime::Runtime::new()?.block_on(async {
                let client = kube::Client::try_default().await?;
                lotus_follower_operator::reconcile::run(client, namespace.as_deref()).await;
                anyhow::Ok(())
            })
        }
    }
}
