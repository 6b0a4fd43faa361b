//! One reconcile of a `LotusFollowerCluster`, as DESIGN.md's pipeline: observe
//! the live workloads → build every desired child (pure, `build/`) → apply what
//! differs (`apply`), ingester first, with the replica hand-over and the image
//! hold of `rollout` → prune children no longer desired → status. A resync that
//! finds nothing to change sends no write at all: no apply, status or Event.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        core::v1::{ObjectReference, Service},
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    apply::{self, FIELD_MANAGER},
    build::{autoscaling, child_name, disruption, followers, ingester, monitoring, service},
    crd::{LotusFollowerCluster, LotusFollowerClusterStatus},
    metrics::Metrics,
    rollout, status,
};

/// Status is rewritten at most this often when only the head height moved.
const STATUS_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no namespace")]
    NoNamespace,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// How often a cluster is looked at again when nothing happens.
    pub resync: Duration,
    /// When each cluster's status was last written (by UID): the rate limit.
    pub status_written: Mutex<HashMap<String, Instant>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

/// One cluster's reconcile: its namespace's APIs, what it wrote, and the
/// Events to publish once the writes are done.
struct Pass<'a> {
    ctx: &'a Context,
    cluster: &'a LotusFollowerCluster,
    namespace: String,
    events: Vec<(EventType, &'static str, String, Option<ObjectReference>)>,
}

impl Pass<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// Applies a child if it differs; records the write.
    async fn ensure<K>(&mut self, api: &Api<K>, desired: &K, force: bool) -> Result<bool, Error>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let wrote = apply::ensure(api, desired, force).await?;
        if wrote {
            let kind = K::kind(&K::DynamicType::default()).into_owned();
            self.wrote(&kind, &desired.name_any(), "apply");
        }
        Ok(wrote)
    }

    async fn prune<K>(&mut self, api: &Api<K>, keep: &[String]) -> Result<(), Error>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let kind = K::kind(&K::DynamicType::default()).into_owned();
        for name in apply::prune(api, self.cluster, keep).await? {
            self.wrote(&kind, &name, "delete");
        }
        Ok(())
    }

    /// Counts a write to the child `kind`/`name` and queues its Event. The
    /// child is the Event's related object, so each child has its own series.
    fn wrote(&mut self, kind: &str, name: &str, verb: &str) {
        self.ctx.metrics.write(kind, verb);
        let (reason, note) = match verb {
            "delete" => (
                "Deleted",
                format!("deleted {kind} {name}: no longer desired"),
            ),
            _ => ("Applied", format!("applied {kind} {name}")),
        };
        tracing::info!(cluster = %self.cluster.name_any(), namespace = %self.namespace, "{note}");
        let related = ObjectReference {
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        };
        self.events
            .push((EventType::Normal, reason, note, Some(related)));
    }

    async fn publish_events(self) {
        let reference = self.cluster.object_ref(&());
        for (type_, reason, note, secondary) in self.events {
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary,
            };
            if let Err(error) = self.ctx.recorder.publish(&event, &reference).await {
                tracing::warn!("publishing an event: {error}");
            }
        }
    }

    /// Every child, in dependency order, then the pruning of what is no longer desired.
    async fn apply_children(&mut self) -> Result<(), Error> {
        let cluster = self.cluster;
        self.ensure(&self.api(), &ingester::service_account(cluster), false)
            .await?;
        self.ensure(&self.api(), &ingester::role(cluster), false)
            .await?;
        self.ensure(&self.api(), &ingester::role_binding(cluster), false)
            .await?;
        self.ensure(&self.api(), &ingester::lease(cluster), false)
            .await?;

        // The ingester first: its schema migrations land before followers read.
        let deployments: Api<Deployment> = self.api();
        let ingester_desired = ingester::deployment(cluster);
        let ingester_live = deployments.get_opt(&ingester_desired.name_any()).await?;
        let ingester_applied = self.ensure(&deployments, &ingester_desired, false).await?;
        let rolled_out = rollout::ingester_rolled_out(&ingester_desired, ingester_live.as_ref());

        let mut followers_desired = followers::deployment(cluster);
        let name = followers_desired.name_any();
        let followers_live = deployments.get_opt(&name).await?;
        if rollout::hold_followers_image(
            &mut followers_desired,
            followers_live.as_ref(),
            rolled_out,
        ) && ingester_applied
        {
            self.events.push((
                EventType::Normal,
                "WaitingForIngester",
                "the followers keep their image until the ingester has rolled out the new one"
                    .into(),
                None,
            ));
        }
        match &cluster.spec.followers.autoscaling {
            Some(scaling) => {
                // Hand-over: pin the current count under a second field manager,
                // then apply without `replicas` so the operator lets go of it.
                let live = match followers_live {
                    Some(live) => live,
                    None => {
                        let mut first = followers_desired.clone();
                        if let Some(spec) = first.spec.as_mut() {
                            spec.replicas = Some(scaling.min_replicas);
                        }
                        self.ensure(&deployments, &first, true).await?;
                        deployments.get(&name).await?
                    }
                };
                let release = rollout::owns_replicas(&live, FIELD_MANAGER);
                if release {
                    let replicas = rollout::handover_replicas(&live, scaling.min_replicas);
                    apply::pin_replicas(&deployments, &name, replicas).await?;
                    self.ctx.metrics.write("Deployment", "apply");
                }
                self.ensure(&deployments, &followers_desired, release)
                    .await?;
            }
            None => {
                self.ensure(&deployments, &followers_desired, false).await?;
            }
        }

        let rpc_service = service::rpc_service(cluster);
        self.ensure(&self.api(), &rpc_service, false).await?;
        self.ensure(&self.api(), &disruption::followers_pdb(cluster), false)
            .await?;
        let hpa = autoscaling::followers_hpa(cluster);
        if let Some(hpa) = &hpa {
            self.ensure(&self.api(), hpa, false).await?;
        }
        self.prune::<HorizontalPodAutoscaler>(&self.api(), &names(hpa.iter()))
            .await?;

        // ServiceMonitors only where the Prometheus Operator's CRD is served.
        let monitors = self.service_monitor_api().await?;
        let metrics_service = monitoring::metrics_service(cluster);
        let mut services = vec![rpc_service.name_any()];
        if let Some(monitors) = &monitors {
            self.ensure(&self.api(), &metrics_service, false).await?;
            services.push(metrics_service.name_any());
            let monitor = monitoring::service_monitor(cluster);
            if apply::ensure(monitors, &monitor, false).await? {
                self.wrote("ServiceMonitor", &monitor.name_any(), "apply");
            }
        }
        self.prune::<Service>(&self.api(), &services).await?;
        Ok(())
    }

    async fn service_monitor_api(&self) -> Result<Option<Api<DynamicObject>>, Error> {
        let resource = monitoring::service_monitor_resource();
        match self
            .ctx
            .client
            .list_api_group_resources(&resource.api_version)
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => Ok(Some(
                Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource),
            )),
            Ok(_) => Ok(None),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

fn names<'a, K: Resource + 'a>(objects: impl Iterator<Item = &'a K>) -> Vec<String> {
    objects.map(ResourceExt::name_any).collect()
}

pub async fn reconcile(
    cluster: Arc<LotusFollowerCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_once(&cluster, &ctx).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[outcome])
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_once(cluster: &LotusFollowerCluster, ctx: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children by their owner
        // references; applying them now would bring them back.
        if let (Some(uid), Ok(mut written)) = (cluster.uid(), ctx.status_written.lock()) {
            written.remove(&uid);
        }
        return Ok(Action::await_change());
    }
    let namespace = cluster.namespace().ok_or(Error::NoNamespace)?;
    let mut pass = Pass {
        ctx,
        cluster,
        namespace,
        events: Vec::new(),
    };
    let applied = if cluster.spec.paused {
        Ok(())
    } else {
        pass.apply_children().await
    };
    // Events for what was done, even when a later step failed.
    let namespace = pass.namespace.clone();
    pass.publish_events().await;
    applied?;
    let next = update_status(ctx, &namespace, cluster).await?;
    Ok(Action::requeue(next.min(ctx.resync)))
}

/// `spec.ingester.maxHeadAge` (`120s`, `5m`, `1h30m`), or the default.
fn max_head_age(cluster: &LotusFollowerCluster) -> Duration {
    cluster
        .spec
        .ingester
        .max_head_age
        .as_deref()
        .and_then(|text| text.parse::<SignedDuration>().ok())
        .and_then(|age| Duration::try_from(age).ok())
        .unwrap_or(status::DEFAULT_MAX_HEAD_AGE)
}

/// When `HeadInSync` would turn False if the ingester published nothing more:
/// the controller looks again then, since no watch event will come.
fn until_head_stale(lease: Option<&Lease>, max_age: Duration, now: Timestamp) -> Option<Duration> {
    let head_time: Timestamp = lease?
        .metadata
        .annotations
        .as_ref()?
        .get(status::HEAD_TIME)?
        .parse()
        .ok()?;
    let age = now.duration_since(head_time);
    let left = SignedDuration::try_from(max_age).ok()? - age;
    Duration::try_from(left)
        .ok()
        .map(|left| left + Duration::from_secs(1))
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

/// Whether two statuses differ in more than the head height.
fn materially_different(
    old: &LotusFollowerClusterStatus,
    new: &LotusFollowerClusterStatus,
) -> bool {
    let mut old = old.clone();
    old.head_height = new.head_height;
    old != *new
}

/// Writes the status when it changed (a head-height-only change at most once
/// per `STATUS_INTERVAL`). Returns when to look again.
async fn update_status(
    ctx: &Context,
    namespace: &str,
    cluster: &LotusFollowerCluster,
) -> Result<Duration, Error> {
    let client = &ctx.client;
    let now = Timestamp::now();
    let generation = cluster.metadata.generation;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let (ready, desired) = replicas(&deployments, &child_name(cluster, "followers")).await?;
    let (ingester_ready, ingester_desired) =
        replicas(&deployments, &child_name(cluster, "ingester")).await?;
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&child_name(cluster, "ingester"))
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
    let max_age = max_head_age(cluster);
    conditions.extend(status::lease_conditions(
        lease.as_ref(),
        max_age,
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
    let new = LotusFollowerClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions,
        head_height,
        followers: Some(format!("{ready}/{desired}")),
        endpoint: Some(service::endpoint(cluster)),
    };
    let stale_in = until_head_stale(lease.as_ref(), max_age, now).unwrap_or(ctx.resync);
    if cluster.status.as_ref() == Some(&new) {
        return Ok(stale_in);
    }
    let uid = cluster.uid().unwrap_or_default();
    let since_last = ctx
        .status_written
        .lock()
        .ok()
        .and_then(|written| written.get(&uid).map(Instant::elapsed));
    if let Some(since_last) = since_last
        && since_last < STATUS_INTERVAL
        && !materially_different(&old, &new)
    {
        // Only the head moved: it is written with the next minute's status.
        return Ok(stale_in.min(STATUS_INTERVAL - since_last));
    }
    // A head height that disappeared is cleared explicitly: the serialized
    // status omits it, and a merge patch keeps what it omits.
    let mut patch = json!({"status": new});
    patch["status"]["headHeight"] = json!(new.head_height);
    Api::<LotusFollowerCluster>::namespaced(client.clone(), namespace)
        .patch_status(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    ctx.metrics.write("LotusFollowerCluster", "status");
    if let Ok(mut written) = ctx.status_written.lock() {
        written.insert(uid, Instant::now());
    }
    Ok(stale_in)
}

pub fn error_policy(
    cluster: Arc<LotusFollowerCluster>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), "reconcile failed: {error}");
    let event = Event {
        type_: EventType::Warning,
        reason: "ReconcileFailed".into(),
        note: Some(error.to_string().chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!("publishing an event: {error}");
        }
    });
    Action::requeue(Duration::from_secs(15))
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

    #[test]
    fn a_fresh_head_is_looked_at_again_when_it_turns_stale() -> anyhow::Result<()> {
        let now = Timestamp::now();
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"annotations": {
                status::HEAD_TIME: (now - SignedDuration::from_secs(100)).to_string(),
            }},
        }))?;
        let left = until_head_stale(Some(&lease), Duration::from_secs(120), now);
        assert_eq!(left, Some(Duration::from_secs(21)));
        // Already stale, or no head at all: nothing to wait for.
        assert_eq!(
            until_head_stale(Some(&lease), Duration::from_secs(60), now),
            None
        );
        assert_eq!(until_head_stale(None, Duration::from_secs(60), now), None);
        Ok(())
    }

    #[test]
    fn only_the_head_height_is_not_material() {
        let old = LotusFollowerClusterStatus {
            head_height: Some(10),
            phase: Some("Running".into()),
            ..LotusFollowerClusterStatus::default()
        };
        let mut new = old.clone();
        new.head_height = Some(11);
        assert!(!materially_different(&old, &new));
        new.phase = Some("Syncing".into());
        assert!(materially_different(&old, &new));
    }
}
