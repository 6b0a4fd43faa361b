//! `lotus-follower-operator`: reconciles `LotusFollowerCluster` resources into a
//! follower fleet (DESIGN.md, "Operator"). `crdgen` prints the CRD, `render` a
//! resource's children.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use lotus_follower_operator::run::{Election, Options};

#[derive(Debug, Parser)]
#[command(
    name = "lotus-follower-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run`'s flags, for running without the subcommand.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the LotusFollowerCluster CustomResourceDefinition as YAML.
    Crdgen,
    /// Print the children the operator would create for the LotusFollowerClusters
    /// in a file, as YAML (like `helm template`): for review and GitOps.
    Render(RenderArgs),
    /// Print the images this release runs, one `<component>=<image>` a line
    /// (`follower` for followers, ingester and devnet; `operator`).
    Images,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// The resource(s), one YAML stream (`-` for standard input); other kinds
    /// in it are skipped.
    #[arg(short = 'f', long = "filename")]
    file: std::path::PathBuf,
    /// The namespace of a resource that names none (default: `default`).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// The operator's namespace, whose pods the fleet's NetworkPolicies let
    /// scrape its metrics (the operator uses its election namespace).
    #[arg(long)]
    operator_namespace: Option<String>,
    /// Render as for a cluster serving the Prometheus Operator's ServiceMonitor kind.
    #[arg(long)]
    service_monitors: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Watch only this namespace; repeat the flag (or separate with commas in
    /// the environment variable) for several. Default: all namespaces.
    #[arg(
        long = "namespace",
        env = "LOTUS_FOLLOWER_OPERATOR_NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// `/metrics`, `/livez` and `/readyz`.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_OPERATOR_METRICS_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    metrics_listen: SocketAddr,
    /// Elect a leader on a Lease in this namespace (the operator's own), so
    /// standby replicas can wait; without it the controller starts at once.
    #[arg(long, env = "LOTUS_FOLLOWER_OPERATOR_ELECTION_NAMESPACE")]
    election_namespace: Option<String>,
    /// The leader-election Lease's name.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_OPERATOR_ELECTION_LEASE",
        default_value = "lotus-follower-operator"
    )]
    election_lease: String,
    /// This instance's identity in the election (its pod name in a cluster).
    #[arg(long, env = "LOTUS_FOLLOWER_OPERATOR_IDENTITY")]
    identity: Option<String>,
    /// How often every resource is looked at again when nothing happens, in seconds.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_OPERATOR_RESYNC_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    resync_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    // Built in one workspace with the follower, whose CQL driver brings rustls
    // with its other provider (aws-lc-rs), rustls cannot pick a default and
    // kube's client would panic: name ring, which kube is built for.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Crdgen) => {
            print!("{}", lotus_follower_operator::crd_yaml()?);
            return Ok(());
        }
        Some(Command::Render(args)) => {
            let yaml = if args.file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&args.file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?
            };
            let options = lotus_follower_operator::render::RenderOptions {
                namespace: args.namespace,
                environment: lotus_follower_operator::build::Environment {
                    operator_namespace: args.operator_namespace,
                    service_monitors: args.service_monitors,
                },
            };
            print!(
                "{}",
                lotus_follower_operator::render::render(&yaml, &options)?
            );
            return Ok(());
        }
        Some(Command::Images) => {
            println!("follower={}", lotus_follower_operator::build::DEFAULT_IMAGE);
            println!(
                "operator={}",
                lotus_follower_operator::build::OPERATOR_IMAGE
            );
            return Ok(());
        }
        Some(Command::Run(args)) => args,
        None => cli.run,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("lotus-follower-operator-{}", std::process::id()));
    let options = Options {
        namespaces: args.namespaces,
        metrics_listen: args.metrics_listen,
        election: args.election_namespace.map(|namespace| Election {
            namespace,
            lease: args.election_lease,
            identity,
        }),
        resync: Duration::from_secs(args.resync_seconds),
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        lotus_follower_operator::run::run(client, options).await
    })
}
