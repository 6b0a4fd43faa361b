//! What tests do with a fleet resource: install the CRDs, wait for a phase,
//! read a condition, and play the ingester's part on its Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams},
};
use lotus_follower_interfaces::lease;
use lotus_follower_operator::crd::{LotusFollowerCluster, LotusFollowerClusterStatus};
use serde_json::{Value, json};

use crate::{Check, TestNamespace, install_crd, wait_until};

pub fn condition(status: &LotusFollowerClusterStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

pub async fn wait_for_phase(
    clusters: &Api<LotusFollowerCluster>,
    name: &str,
    phase: &str,
    followers: &str,
) -> anyhow::Result<LotusFollowerClusterStatus> {
    Ok(wait_until(
        &format!("{name} to be {phase} with {followers} followers"),
        Duration::from_secs(90),
        || async {
            let status = clusters.get_status(name).await?.status.unwrap_or_default();
            let seen = format!("{:?} {:?}", status.phase, status.followers);
            let done = status.phase.as_deref() == Some(phase)
                && status.followers.as_deref() == Some(followers);
            Ok(Check::when(done, status, seen))
        },
    )
    .await?)
}

/// The ingester's ServiceAccount reports a recent head, a synced leader and a
/// reachable store on its Lease (its binding suffices for exactly that).
pub async fn publish_head(
    ingester: &Client,
    ns: &TestNamespace,
    lease: &str,
    height: i64,
) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let patch = json!({
        "metadata": {"annotations": {
            lease::HEAD_HEIGHT: height.to_string(),
            lease::HEAD_TIME: now.to_string(),
            lease::LEADER: lease::OK,
            lease::STORE: lease::OK,
        }},
        // MicroTime's own serialization: the API server wants exactly microseconds.
        "spec": {"holderIdentity": "ingester-0", "leaseDurationSeconds": 30,
                 "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now)},
    });
    Api::<Lease>::namespaced(ingester.clone(), &ns.name)
        .patch(lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The resource's CRD, and the Prometheus Operator's ServiceMonitor kind (in
/// every test, since it changes what every operator builds).
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    install_crd(client, &LotusFollowerCluster::crd()).await?;
    install_crd(client, &serde_json::from_value(service_monitor_crd())?).await
}

/// The ServiceMonitor kind with its schema left open: the operator only needs
/// the API server to serve the kind.
pub fn service_monitor_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    })
}
