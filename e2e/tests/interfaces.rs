//! The interface between the operator and the `lotus-follower` binary: every
//! argument list and environment variable the operator puts in a pod is one
//! the binary's own command line accepts (no test bed needed).

use clap::{CommandFactory, Parser};
use kube::ResourceExt;
use lotus_follower::cli::Cli;
use lotus_follower_operator::{
    build::{followers, ingester},
    crd::LotusFollowerCluster,
};

fn fixture(yaml: &str) -> anyhow::Result<LotusFollowerCluster> {
    let mut cluster: LotusFollowerCluster = serde_yaml::from_str(yaml)?;
    cluster.metadata.namespace = Some("fleet".into());
    cluster.metadata.uid = Some("0000-uid".into());
    Ok(cluster)
}

/// Every environment variable some flag of some subcommand reads.
fn known_env() -> Vec<String> {
    let command = Cli::command();
    command
        .get_subcommands()
        .flat_map(|subcommand| subcommand.get_arguments().cloned().collect::<Vec<_>>())
        .filter_map(|argument| {
            argument
                .get_env()
                .map(|env| env.to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn operator_built_pods_speak_the_follower_command_line() -> anyhow::Result<()> {
    let known = known_env();
    for yaml in [
        include_str!("../../operator/src/build/fixtures/minimal.yaml"),
        include_str!("../../manifests/examples/external.yaml"),
    ] {
        let cluster = fixture(yaml)?;
        for deployment in [
            followers::deployment(&cluster),
            ingester::deployment(&cluster),
        ] {
            let name = deployment.name_any();
            let pod = deployment
                .spec
                .and_then(|spec| spec.template.spec)
                .ok_or_else(|| anyhow::anyhow!("{name} has no pod"))?;
            let container = &pod.containers[0];
            let args = container.args.clone().unwrap_or_default();
            let parsed = Cli::try_parse_from(
                std::iter::once("lotus-follower".to_owned()).chain(args.iter().cloned()),
            );
            if let Err(error) = parsed {
                anyhow::bail!("{name}'s arguments {args:?} do not parse:\n{error}");
            }
            for env in container.env.iter().flatten() {
                if env.name.starts_with("LOTUS_FOLLOWER_") {
                    anyhow::ensure!(
                        known.contains(&env.name),
                        "{name} sets {}, which no flag reads",
                        env.name
                    );
                }
            }
            println!("{name}: {} arguments parse", args.len());
        }
    }
    Ok(())
}
