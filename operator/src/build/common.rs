//! What every child shares: names, labels, the owner reference.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::crd::LotusFollowerCluster;

/// The `lotus-follower` image when the resource names none: this operator's own
/// version. The test bed tags what it builds with `lotus-follower-operator
/// images`, and a test holds the manifests to [`OPERATOR_IMAGE`].
pub const DEFAULT_IMAGE: &str = lotus_follower_interfaces::images::FOLLOWER;

/// The operator's own image, as the install manifests name it.
pub const OPERATOR_IMAGE: &str = lotus_follower_interfaces::images::OPERATOR;

/// `<name>-<role>`: `-followers`, `-rpc`, `-ingester`, …
pub fn child_name(cluster: &LotusFollowerCluster, role: &str) -> String {
    format!("{}-{role}", cluster.name_any())
}

/// The labels that select one component's pods; they never change.
pub fn selector_labels(
    cluster: &LotusFollowerCluster,
    component: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "lotus-follower".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), cluster.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

/// Every child's labels: the selector labels plus who manages it.
pub fn labels(cluster: &LotusFollowerCluster, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "lotus-follower-operator".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/part-of".to_owned(),
        "lotus-follower".to_owned(),
    );
    labels
}

/// A child's metadata: `<name>-<role>` in the resource's namespace, with the
/// component's labels and the owner reference.
pub fn child_metadata(cluster: &LotusFollowerCluster, role: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(cluster, role)),
        namespace: cluster.namespace(),
        labels: Some(labels(cluster, component)),
        owner_references: Some(vec![owner_reference(cluster)]),
        ..ObjectMeta::default()
    }
}

/// Children are owned by the resource (deleted with it, watched for drift).
pub fn owner_reference(cluster: &LotusFollowerCluster) -> OwnerReference {
    OwnerReference {
        api_version: LotusFollowerCluster::api_version(&()).into_owned(),
        kind: LotusFollowerCluster::kind(&()).into_owned(),
        name: cluster.name_any(),
        uid: cluster.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
