//! Writes to the API server, each only when needed: apply a child whose live
//! form (from the cache) differs from the built one, create the ingester's
//! Lease once, pin replicas for the HPA hand-over, delete a child no longer
//! desired.

use std::fmt::Debug;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    diff::{drops_fields, is_applied, owned_fields},
    rollout::HANDOVER_FIELD_MANAGER,
};

/// The one field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "lotus-follower-operator";

/// Applies `desired` unless `live` already matches it and holds no field of
/// ours that `desired` dropped (or `force`). Returns the applied object when
/// it wrote.
pub async fn ensure<K>(
    api: &Api<K>,
    desired: &K,
    live: Option<&K>,
    force: bool,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    if !force && let Some(live) = live {
        let (desired, live) = (to_json(desired)?, to_json(live)?);
        if is_applied(&desired, &live)
            && !drops_fields(&owned_fields(&live, FIELD_MANAGER), &desired)
        {
            return Ok(None);
        }
    }
    api.patch(
        &desired.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
    .map(Some)
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, kube::Error> {
    serde_json::to_value(value).map_err(kube::Error::SerdeError)
}

/// Creates the ingester's Lease when it does not exist; the ingester owns its
/// content from then on (the operator may create Leases, never update them).
/// Returns whether it created it.
pub async fn create_lease(
    api: &Api<Lease>,
    desired: &Lease,
    live: Option<&Lease>,
) -> Result<bool, kube::Error> {
    if live.is_some() {
        return Ok(false);
    }
    match api.create(&PostParams::default(), desired).await {
        Ok(_) => Ok(true),
        // Created since the cache last heard: nothing to do.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
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

/// Deletes a child no longer desired (one the resource owns: the caller found
/// it among the resource's observed children). Gone already is fine.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
