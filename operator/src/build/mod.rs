//! Pure builders of the objects a `LotusFollowerCluster` owns, one file per
//! child. They read the resource (and the little they need to know about the
//! cluster, [`Environment`]) and return the desired objects; the reconciler
//! applies them, and `render` prints them.

pub mod autoscaling;
mod common;
pub mod disruption;
pub mod followers;
pub mod ingester;
pub mod monitoring;
pub mod network;
pub mod placement;
pub mod service;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    coordination::v1::Lease,
    core::v1::{Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::RoleBinding,
};
use kube::api::DynamicObject;

use crate::crd::LotusFollowerCluster;
pub use common::{
    DEFAULT_IMAGE, OPERATOR_IMAGE, child_metadata, child_name, labels, owner_reference,
    selector_labels,
};

/// What the builders need to know beyond the resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The operator's own namespace: its pods may scrape the fleet's metrics.
    pub operator_namespace: Option<String>,
    /// Whether the cluster serves the Prometheus Operator's ServiceMonitor kind.
    pub service_monitors: bool,
}

/// Every child a resource wants, in the order they are applied.
#[derive(Debug, Clone)]
pub struct Desired {
    pub ingester_service_account: ServiceAccount,
    pub ingester_role_binding: RoleBinding,
    pub ingester_lease: Lease,
    pub ingester: Deployment,
    pub followers: Deployment,
    pub rpc_service: Service,
    pub pdb: PodDisruptionBudget,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub metrics_service: Service,
    pub service_monitor: Option<DynamicObject>,
    pub network_policies: Vec<NetworkPolicy>,
}

pub fn desired(cluster: &LotusFollowerCluster, environment: &Environment) -> Desired {
    Desired {
        ingester_service_account: ingester::service_account(cluster),
        ingester_role_binding: ingester::role_binding(cluster),
        ingester_lease: ingester::lease(cluster),
        ingester: ingester::deployment(cluster),
        followers: followers::deployment(cluster),
        rpc_service: service::rpc_service(cluster),
        pdb: disruption::followers_pdb(cluster),
        hpa: autoscaling::followers_hpa(cluster),
        metrics_service: monitoring::metrics_service(cluster),
        service_monitor: environment
            .service_monitors
            .then(|| monitoring::service_monitor(cluster)),
        network_policies: network::policies(cluster, environment),
    }
}

impl Desired {
    /// Every object, in apply order, with its `apiVersion` and `kind` (what
    /// `render` prints and `kubectl apply` takes).
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        use serde_json::to_value;
        let mut objects = vec![
            to_value(&self.ingester_service_account)?,
            to_value(&self.ingester_role_binding)?,
            to_value(&self.ingester_lease)?,
            to_value(&self.ingester)?,
            to_value(&self.followers)?,
            to_value(&self.rpc_service)?,
            to_value(&self.pdb)?,
            to_value(&self.metrics_service)?,
        ];
        objects.extend(
            self.hpa
                .iter()
                .map(to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        objects.extend(
            self.service_monitor
                .iter()
                .map(to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        objects.extend(
            self.network_policies
                .iter()
                .map(to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        Ok(objects)
    }
}

/// A resource from a YAML fixture, as the API server would hand it over.
#[cfg(test)]
pub(crate) fn fixture(yaml: &str) -> anyhow::Result<crate::crd::LotusFollowerCluster> {
    let mut cluster: crate::crd::LotusFollowerCluster = serde_yaml::from_str(yaml)?;
    cluster.metadata.namespace = Some("fleet".into());
    cluster.metadata.uid = Some("0000-uid".into());
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    #[test]
    fn the_install_manifests_run_this_releases_operator_image() {
        let manifest = include_str!("../../../manifests/install.yaml");
        let images: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("image: "))
            .map(|image| image.trim_matches('"'))
            .collect();
        assert_eq!(images, [OPERATOR_IMAGE]);
        // The chart's image tag defaults to its appVersion: this release's.
        let chart = include_str!("../../../charts/lotus-follower-operator/Chart.yaml");
        let app_version = chart
            .lines()
            .find_map(|line| line.strip_prefix("appVersion: "))
            .map(|version| version.trim_matches('"'));
        assert_eq!(app_version, Some(env!("CARGO_PKG_VERSION")));
        let values = include_str!("../../../charts/lotus-follower-operator/values.yaml");
        let repository = values
            .lines()
            .find_map(|line| line.trim().strip_prefix("repository: "));
        assert_eq!(
            repository.map(|r| format!("{r}:{}", env!("CARGO_PKG_VERSION"))),
            Some(OPERATOR_IMAGE.to_owned())
        );
    }

    #[test]
    fn the_rpc_service_selects_the_followers() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let service = service::rpc_service(&cluster);
        assert_eq!(service.metadata.name.as_deref(), Some("demo-rpc"));
        let spec = service.spec.expect("a spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.selector,
            Some(selector_labels(&cluster, followers::COMPONENT))
        );
        let pod_labels = followers::deployment(&cluster)
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels);
        let selected = spec.selector.unwrap_or_default();
        assert!(
            selected
                .iter()
                .all(|(k, v)| pod_labels.as_ref().and_then(|l| l.get(k)) == Some(v)),
            "the Service selects the follower pods"
        );
        assert_eq!(spec.ports.unwrap_or_default()[0].port, 1234);
        assert_eq!(
            service::endpoint(&cluster),
            "http://demo-rpc.fleet.svc:1234/rpc/v1"
        );
        Ok(())
    }

    #[test]
    fn the_pdb_never_blocks_a_single_replica() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let spec = disruption::followers_pdb(&cluster).spec.expect("a spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        Ok(())
    }

    #[test]
    fn the_hpa_scales_on_the_rpc_rate_and_cpu_only_when_asked() -> anyhow::Result<()> {
        assert!(
            autoscaling::followers_hpa(&fixture(include_str!("fixtures/minimal.yaml"))?).is_none()
        );
        let cluster = fixture(include_str!("../../../manifests/examples/external.yaml"))?;
        let hpa = autoscaling::followers_hpa(&cluster).expect("an HPA");
        assert_eq!(hpa.spec.scale_target_ref.name, "fleet-followers");
        assert_eq!(
            (hpa.spec.min_replicas, hpa.spec.max_replicas),
            (Some(2), 10)
        );
        let metrics = hpa.spec.metrics.unwrap_or_default();
        let pods = metrics
            .iter()
            .find_map(|m| m.pods.as_ref())
            .expect("a Pods metric");
        assert_eq!(pods.metric.name, autoscaling::RPC_RATE_METRIC);
        assert_eq!(
            pods.target.average_value.as_ref().map(|q| q.0.as_str()),
            Some("200")
        );
        let cpu = metrics
            .iter()
            .find_map(|m| m.resource.as_ref())
            .expect("a CPU metric");
        assert_eq!(cpu.target.average_utilization, Some(70));
        Ok(())
    }
}
