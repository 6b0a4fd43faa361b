//! Writes to the API server, each only when needed: apply a child whose live
//! form differs from the built one, pin replicas for the HPA hand-over, and
//! delete owned children that are no longer desired (apply does not prune).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    crd::LotusFollowerCluster,
    diff::{drops_fields, is_applied, owned_fields},
    rollout::HANDOVER_FIELD_MANAGER,
};

/// The one field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "lotus-follower-operator";

/// Applies `desired` unless the live object already matches it and holds no
/// field of ours that `desired` dropped (or `force`). Returns whether it wrote.
pub async fn ensure<K>(api: &Api<K>, desired: &K, force: bool) -> Result<bool, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    if !force && let Some(live) = api.get_opt(&name).await? {
        let (desired, live) = (to_json(desired)?, to_json(&live)?);
        if is_applied(&desired, &live)
            && !drops_fields(&owned_fields(&live, FIELD_MANAGER), &desired)
        {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(true)
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, kube::Error> {
    serde_json::to_value(value).map_err(kube::Error::SerdeError)
}

/// Pins the followers' replicas under the hand-over field manager, so that
/// when the operator's own apply stops setting them they stay where they are
/// until the HPA moves them.
pub async fn pin_replicas(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(HANDOVER_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The label selector of everything the operator made for `cluster`.
pub fn owned_selector(cluster: &LotusFollowerCluster) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by={FIELD_MANAGER}",
        cluster.name_any()
    )
}

/// Deletes `cluster`'s children of one kind whose names are not in `keep`.
/// Only objects carrying the operator's labels *and* the cluster's owner
/// reference are candidates, so nothing a user made is ever touched.
/// Returns the names deleted.
pub async fn prune<K>(
    api: &Api<K>,
    cluster: &LotusFollowerCluster,
    keep: &[String],
) -> Result<Vec<String>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let uid = cluster.uid();
    let mut deleted = Vec::new();
    let listed = api
        .list_metadata(&ListParams::default().labels(&owned_selector(cluster)))
        .await?;
    for object in listed {
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| Some(&owner.uid) == uid.as_ref());
        let name = object.name_any();
        if owned && !keep.contains(&name) {
            api.delete(&name, &DeleteParams::default()).await?;
            deleted.push(name);
        }
    }
    Ok(deleted)
}
