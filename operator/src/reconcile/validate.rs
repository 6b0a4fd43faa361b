//! Validate: what the schema cannot express, judged before anything is
//! applied. A problem becomes the `SpecValid` condition with its reason, and
//! the operator leaves the fleet as it is: a pod that would refuse its own
//! arguments is never rolled out to crash-loop.

use std::collections::BTreeSet;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::EnvVar};

use crate::{
    build::{followers, ingester},
    crd::LotusFollowerCluster,
};

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The condition's reason, CamelCase.
    pub reason: &'static str,
    pub message: String,
}

pub fn validate(cluster: &LotusFollowerCluster) -> Vec<Problem> {
    let mut problems = Vec::new();
    let spec = &cluster.spec;
    // Built without the extras, the pods show what the operator itself sets.
    let mut bare = cluster.clone();
    bare.spec.ingester.extra_args.clear();
    bare.spec.ingester.extra_env.clear();
    bare.spec.followers.extra_args.clear();
    bare.spec.followers.extra_env.clear();
    for (component, built, extra_args, extra_env) in [
        (
            "ingester",
            ingester::deployment(&bare),
            &spec.ingester.extra_args,
            &spec.ingester.extra_env,
        ),
        (
            "followers",
            followers::deployment(&bare),
            &spec.followers.extra_args,
            &spec.followers.extra_env,
        ),
    ] {
        let (flags, env) = operator_set(&built);
        let clashing: Vec<&str> = extra_args
            .iter()
            .filter_map(|arg| flag_name(arg))
            .filter(|flag| flags.contains(*flag))
            .collect();
        if !clashing.is_empty() {
            problems.push(Problem {
                reason: "ConflictingArguments",
                message: format!(
                    "{component}.extraArgs sets {} which the operator sets from the spec",
                    clashing.join(", ")
                ),
            });
        }
        let clashing: Vec<&str> = extra_env
            .iter()
            .map(|var| var.name.as_str())
            .filter(|name| env.contains(*name))
            .collect();
        if !clashing.is_empty() {
            problems.push(Problem {
                reason: "ConflictingEnvironment",
                message: format!(
                    "{component}.extraEnv sets {} which the operator sets from the spec",
                    clashing.join(", ")
                ),
            });
        }
    }
    if let Some(size) = &spec.followers.cache_size
        && followers::quantity_bytes(&size.0).is_none()
    {
        problems.push(Problem {
            reason: "InvalidCacheSize",
            message: format!("followers.cacheSize {:?} is not a size in bytes", size.0),
        });
    }
    let policy = &spec.network_policy;
    let bad_cidrs: Vec<&str> = [
        &policy.database_cidrs,
        &policy.leader_cidrs,
        &policy.api_server_cidrs,
    ]
    .into_iter()
    .flatten()
    .map(String::as_str)
    .filter(|cidr| !is_cidr(cidr))
    .collect();
    if !bad_cidrs.is_empty() {
        problems.push(Problem {
            reason: "InvalidCIDR",
            message: format!("networkPolicy: not CIDRs: {}", bad_cidrs.join(", ")),
        });
    }
    problems
}

/// The flags (`--name`) and environment variables a built container sets.
fn operator_set(deployment: &Deployment) -> (BTreeSet<String>, BTreeSet<String>) {
    let container = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first());
    let flags = container
        .and_then(|c| c.args.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|arg| flag_name(arg))
        .map(str::to_owned)
        .collect();
    let env = container
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .map(|var: &EnvVar| var.name.clone())
        .collect();
    (flags, env)
}

/// `--name` of `--name` or `--name=value`; `None` for a value.
fn flag_name(arg: &str) -> Option<&str> {
    arg.starts_with("--")
        .then(|| arg.split_once('=').map_or(arg, |(name, _)| name))
}

/// `address/prefix`, IPv4 or IPv6, the prefix within the address's length.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_fixtures_are_valid() -> anyhow::Result<()> {
        for yaml in [
            include_str!("../build/fixtures/minimal.yaml"),
            include_str!("../build/fixtures/placement.yaml"),
            include_str!("../../../manifests/examples/external.yaml"),
        ] {
            assert_eq!(validate(&fixture(yaml)?), []);
        }
        Ok(())
    }

    #[test]
    fn extras_may_not_override_what_the_operator_sets() -> anyhow::Result<()> {
        let mut cluster = fixture(include_str!("../../../manifests/examples/external.yaml"))?;
        cluster.spec.followers.extra_args =
            vec!["--store=cql://elsewhere/x".into(), "--verbose".into()];
        cluster.spec.ingester.extra_env = vec![EnvVar {
            name: "LOTUS_FOLLOWER_CQL_USERNAME".into(),
            value: Some("root".into()),
            ..EnvVar::default()
        }];
        let problems = validate(&cluster);
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["ConflictingEnvironment", "ConflictingArguments"]);
        assert!(problems[1].message.contains("--store"), "{problems:?}");
        assert!(!problems[1].message.contains("--verbose"), "{problems:?}");
        Ok(())
    }

    #[test]
    fn sizes_and_cidrs_must_parse() -> anyhow::Result<()> {
        let mut cluster = fixture(include_str!("../build/fixtures/minimal.yaml"))?;
        cluster.spec.followers.cache_size = Some(
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()),
        );
        cluster.spec.network_policy.database_cidrs =
            vec!["10.0.0.0/8".into(), "10.0.0.0/33".into(), "db".into()];
        let problems = validate(&cluster);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].reason, "InvalidCacheSize");
        assert_eq!(
            problems[1].message,
            "networkPolicy: not CIDRs: 10.0.0.0/33, db"
        );
        assert!(is_cidr("fd00::/64"));
        Ok(())
    }
}
