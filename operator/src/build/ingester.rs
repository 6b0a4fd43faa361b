//! The ingester: its Deployment (one active replica; during a rollout the new pod
//! waits as a standby, fenced by the Lease), its ServiceAccount, the Lease
//! `<name>-ingester` the operator creates, and the RoleBinding that lets it
//! update Leases in its namespace.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Container, ContainerPort, PodSpec, PodTemplateSpec, ServiceAccount},
        rbac::v1::{RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{ResourceExt, api::ObjectMeta};
use lotus_follower_interfaces::{commands, flags};

use super::{
    common::{DEFAULT_IMAGE, child_metadata, child_name, labels, selector_labels},
    followers::{
        DatabaseRole, METRICS_PORT, connection, restricted_container_security,
        restricted_pod_security, with_scratch_tmp,
    },
    placement::{place, pod_annotations},
};
use crate::crd::LotusFollowerCluster;

pub const COMPONENT: &str = "ingester";

fn metadata(cluster: &LotusFollowerCluster) -> ObjectMeta {
    child_metadata(cluster, "ingester", COMPONENT)
}

pub fn service_account(cluster: &LotusFollowerCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(cluster),
        ..ServiceAccount::default()
    }
}

/// Created empty; the ingester that acquires it fills in holder and annotations.
pub fn lease(cluster: &LotusFollowerCluster) -> Lease {
    Lease {
        metadata: metadata(cluster),
        spec: Some(LeaseSpec::default()),
    }
}

/// The ClusterRole the install ships (Lease get, update, patch) and the
/// operator binds in each fleet's namespace. A Role of the operator's own making
/// would need the operator to hold those verbs on every Lease (RBAC's escalation
/// check); binding a fixed ClusterRole needs only `bind` on it.
pub const CLUSTER_ROLE: &str = "lotus-follower-ingester";

/// Binds [`CLUSTER_ROLE`] to the ingester's ServiceAccount in the fleet's
/// namespace: it may update the Leases there, none elsewhere.
pub fn role_binding(cluster: &LotusFollowerCluster) -> RoleBinding {
    RoleBinding {
        metadata: metadata(cluster),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: child_name(cluster, "ingester"),
            namespace: cluster.namespace(),
            ..Subject::default()
        }]),
    }
}

pub fn deployment(cluster: &LotusFollowerCluster) -> Deployment {
    let ingester = &cluster.spec.ingester;
    let connection = connection(cluster, DatabaseRole::Ingester);
    let mut args = vec![
        commands::INGEST.to_owned(),
        flags::METRICS_LISTEN.arg(),
        format!("0.0.0.0:{METRICS_PORT}"),
        flags::LEASE.arg(),
        format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            child_name(cluster, "ingester")
        ),
    ];
    args.extend(connection.args);
    if let Some(gap) = ingester.max_gap {
        args.extend([flags::MAX_GAP.arg(), gap.to_string()]);
    }
    args.extend(ingester.extra_args.iter().cloned());
    let mut env = connection.env;
    env.extend(ingester.extra_env.iter().cloned());
    let (volumes, mounts) = with_scratch_tmp(connection.volumes, connection.mounts);
    let container = Container {
        name: "ingester".into(),
        image: Some(
            ingester
                .image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        ),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            ..ContainerPort::default()
        }]),
        resources: ingester.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(child_name(cluster, "ingester")),
        security_context: Some(restricted_pod_security()),
        // Time to finish the tipset being written and give the Lease up, so the
        // next ingester takes over at once instead of after the Lease expires.
        termination_grace_period_seconds: Some(super::followers::TERMINATION_GRACE_SECONDS),
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    place(&mut pod, &ingester.placement);
    Deployment {
        metadata: metadata(cluster),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // The new pod starts before the old one stops and waits for the Lease.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster, COMPONENT)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cluster, COMPONENT)),
                    annotations: pod_annotations(&ingester.placement, BTreeMap::new()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_ingester_is_bound_to_the_shipped_cluster_role() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let binding = role_binding(&cluster);
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, CLUSTER_ROLE);
        assert_eq!(binding.metadata.namespace.as_deref(), Some("fleet"));
        assert_eq!(
            binding.subjects.unwrap_or_default()[0].name,
            "demo-ingester"
        );
        assert_eq!(
            lease(&cluster).metadata.name.as_deref(),
            Some("demo-ingester")
        );
        Ok(())
    }

    #[test]
    fn the_ingester_uses_its_own_credentials_and_lease() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("../../../manifests/examples/external.yaml"))?;
        let deployment = deployment(&cluster);
        let spec = deployment.spec.expect("a spec");
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.expect("a pod spec");
        assert_eq!(pod.service_account_name.as_deref(), Some("fleet-ingester"));
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(args[0], "ingest");
        let lease_flag = args
            .iter()
            .position(|a| a == "--lease")
            .map(|i| args[i + 1].clone());
        assert_eq!(lease_flag.as_deref(), Some("fleet/fleet-ingester"));
        let username = container.env.clone().unwrap_or_default();
        let secret = username[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("from a Secret");
        assert_eq!(
            secret.name, "lotus-db-ingester",
            "the ingester's own Secret"
        );
        Ok(())
    }

    #[test]
    fn placement_reaches_the_ingester_pod() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/placement.yaml"))?;
        let spec = deployment(&cluster).spec.expect("a spec");
        let annotations = spec
            .template
            .metadata
            .and_then(|metadata| metadata.annotations);
        assert_eq!(
            annotations,
            Some(BTreeMap::from([(
                "example.com/owner".into(),
                "chain-team".into()
            )])),
            "the ingester's own, not the followers'"
        );
        let pod = spec.template.spec.expect("a pod spec");
        assert_eq!(
            pod.node_selector,
            Some(BTreeMap::from([("node-pool".into(), "chain".into())]))
        );
        let tolerations = pod.tolerations.unwrap_or_default();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].value.as_deref(), Some("chain"));
        assert_eq!(pod.affinity, None, "none given for the ingester");

        let minimal = deployment(&fixture(include_str!("fixtures/minimal.yaml"))?)
            .spec
            .expect("a spec");
        let pod = minimal.template.spec.expect("a pod spec");
        assert_eq!(
            (pod.node_selector, pod.tolerations, pod.affinity),
            (None, None, None)
        );
        Ok(())
    }
}
