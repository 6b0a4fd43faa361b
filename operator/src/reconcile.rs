//! The reconcile loop, first cut: apply each child whose live form differs from
//! the built one (`diff::is_applied`; an unchanged child costs no write), delete
//! the HPA when autoscaling is off, and report status: conditions from the
//! workloads and the ingester's Lease, phase, head height, followers
//! `ready/desired`, endpoint. Events, metrics and the replica hand-over come next.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, coordination::v1::Lease,
        core::v1::Service, policy::v1::PodDisruptionBudget,
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    build::{autoscaling, disruption, followers, ingester, service},
    crd::{LotusFollowerCluster, LotusFollowerClusterStatus},
    diff::is_applied,
    status,
};

/// The one field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "lotus-follower-operator";
/// A periodic resync catches what watches miss; it writes nothing when nothing changed.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the resource has no namespace")]
    NoNamespace,
}

#[derive(Clone)]
pub struct Context {
    pub client: Client,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

/// Applies `desired` unless the live object already matches it. Returns whether it wrote.
async fn ensure<K>(client: &Client, namespace: &str, desired: &K) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    if let Some(live) = api.get_opt(&name).await?
        && is_applied(
            &serde_json::to_value(desired)?,
            &serde_json::to_value(&live)?,
        )
    {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(true)
}

pub async fn reconcile(
    cluster: Arc<LotusFollowerCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = cluster.namespace().ok_or(Error::NoNamespace)?;
    let client = &ctx.client;
    if !cluster.spec.paused {
        ensure(client, &namespace, &ingester::service_account(&cluster)).await?;
        ensure(client, &namespace, &ingester::role(&cluster)).await?;
        ensure(client, &namespace, &ingester::role_binding(&cluster)).await?;
        ensure(client, &namespace, &ingester::lease(&cluster)).await?;
        ensure(client, &namespace, &ingester::deployment(&cluster)).await?;

        let mut followers_deployment = followers::deployment(&cluster);
        let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
        if let Some(scaling) = &cluster.spec.followers.autoscaling
            && deployments
                .get_opt(&followers_deployment.name_any())
                .await?
                .is_none()
            && let Some(spec) = followers_deployment.spec.as_mut()
        {
            // A new fleet starts at the HPA's minimum, never at the Deployment default of 1.
            spec.replicas = Some(scaling.min_replicas);
        }
        ensure(client, &namespace, &followers_deployment).await?;
        ensure(client, &namespace, &service::rpc_service(&cluster)).await?;
        ensure(client, &namespace, &disruption::followers_pdb(&cluster)).await?;
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &namespace);
        match autoscaling::followers_hpa(&cluster) {
            Some(hpa) => {
                ensure(client, &namespace, &hpa).await?;
            }
            None => {
                let name = crate::build::child_name(&cluster, "followers");
                if hpas.get_opt(&name).await?.is_some() {
                    hpas.delete(&name, &DeleteParams::default()).await?;
                }
            }
        }
    }
    update_status(client, &namespace, &cluster).await?;
    Ok(Action::requeue(RESYNC))
}

/// `spec.ingester.maxHeadAge` (`120s`, `5m`, `1h30m`), or the default.
fn max_head_age(cluster: &LotusFollowerCluster) -> Duration {
    cluster
        .spec
        .ingester
        .max_head_age
        .as_deref()
        .and_then(|text| text.parse::<k8s_openapi::jiff::SignedDuration>().ok())
        .and_then(|age| Duration::try_from(age).ok())
        .unwrap_or(status::DEFAULT_MAX_HEAD_AGE)
}

/// (ready, desired) replicas of a Deployment, (0, 0) when it is absent.
async fn replicas(deployments: &Api<Deployment>, name: &str) -> Result<(i32, i32), Error> {
    Ok(deployments
        .get_opt(name)
        .await?
        .map(|deployment| {
            let ready = deployment
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let desired = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            (ready, desired)
        })
        .unwrap_or((0, 0)))
}

async fn update_status(
    client: &Client,
    namespace: &str,
    cluster: &LotusFollowerCluster,
) -> Result<(), Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let generation = cluster.metadata.generation;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let (ready, desired) = replicas(
        &deployments,
        &crate::build::child_name(cluster, "followers"),
    )
    .await?;
    let (ingester_ready, ingester_desired) =
        replicas(&deployments, &crate::build::child_name(cluster, "ingester")).await?;
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&crate::build::child_name(cluster, "ingester"))
        .await?;

    let ingester = status::workload_condition(
        "IngesterReady",
        ingester_ready,
        ingester_desired,
        generation,
        now,
    );
    let followers = status::workload_condition("FollowersReady", ready, desired, generation, now);
    let ready_condition = status::ready_condition(&[&ingester, &followers], generation, now);
    let mut conditions = vec![ready_condition, ingester, followers];
    conditions.extend(status::lease_conditions(
        lease.as_ref(),
        max_head_age(cluster),
        generation,
        now,
    ));
    let old = cluster.status.clone().unwrap_or_default();
    let conditions = status::merge_conditions(&old.conditions, conditions);

    let ready_now = conditions.first().is_some_and(|c| c.status == "True");
    let in_sync = conditions
        .iter()
        .any(|c| c.type_ == "HeadInSync" && c.status == "True");
    let phase = match (cluster.spec.paused, ready_now, in_sync) {
        (true, _, _) => "Paused",
        (false, true, true) => "Running",
        (false, true, false) => "Syncing",
        (false, false, _) => "Pending",
    };
    let head_height = lease.as_ref().and_then(|lease| {
        lease
            .metadata
            .annotations
            .as_ref()?
            .get(status::HEAD_HEIGHT)?
            .parse()
            .ok()
    });
    let status = LotusFollowerClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions,
        head_height,
        followers: Some(format!("{ready}/{desired}")),
        endpoint: Some(service::endpoint(cluster)),
    };
    // A status write only when something changed: no storm from our own writes.
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    Api::<LotusFollowerCluster>::namespaced(client.clone(), namespace)
        .patch_status(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

fn error_policy(cluster: Arc<LotusFollowerCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), "reconcile failed: {error}");
    Action::requeue(Duration::from_secs(15))
}

/// Runs the controller until the stream ends (on a shutdown signal). `namespace`
/// limits it to one namespace; `None` watches them all.
pub async fn run(client: Client, namespace: Option<&str>) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
    let config = watcher::Config::default();
    let context = Arc::new(Context {
        client: client.clone(),
    });
    Controller::new(
        api::<LotusFollowerCluster>(&client, namespace),
        config.clone(),
    )
    .owns(api::<Deployment>(&client, namespace), config.clone())
    .owns(api::<Service>(&client, namespace), config.clone())
    .owns(
        api::<PodDisruptionBudget>(&client, namespace),
        config.clone(),
    )
    .owns(api::<HorizontalPodAutoscaler>(&client, namespace), config)
    .shutdown_on_signal()
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(%object, "reconciled"),
            Err(error) => tracing::warn!("reconcile error: {error}"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_head_age_reads_durations() -> anyhow::Result<()> {
        let mut cluster = crate::build::fixture(include_str!("build/fixtures/minimal.yaml"))?;
        assert_eq!(max_head_age(&cluster), status::DEFAULT_MAX_HEAD_AGE);
        for (text, seconds) in [("90s", 90), ("5m", 300), ("1h30m", 5400)] {
            cluster.spec.ingester.max_head_age = Some(text.into());
            assert_eq!(
                max_head_age(&cluster),
                Duration::from_secs(seconds),
                "{text}"
            );
        }
        Ok(())
    }
}
