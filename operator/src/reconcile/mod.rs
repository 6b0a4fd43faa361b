//! One reconcile of a `LotusFollowerCluster`, as DESIGN.md's pipeline:
//! observe the children in the caches (`observe`) → validate what the schema
//! cannot (`validate`) → build every desired child (pure, `build/`) → apply
//! what differs, ingester first, with the replica hand-over and the image hold
//! of `rollout` (`apply`) → prune children no longer desired → the status as a
//! pure function of what was observed (`status`) → one server-side apply of
//! it. Reads come from the caches only; a resync that finds nothing to change
//! sends no request at all.

pub mod apply;
pub mod diff;
pub mod observe;
pub mod rollout;
pub mod status;
pub mod validate;

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        autoscaling::v2::HorizontalPodAutoscaler, core::v1::ObjectReference,
        networking::v1::NetworkPolicy,
    },
    jiff::Timestamp,
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
use tracing::Instrument;

use self::{
    apply::FIELD_MANAGER,
    observe::{Caches, Observed, Owned},
};
use crate::{
    build::{self, Desired, Environment, monitoring},
    crd::{LotusFollowerCluster, LotusFollowerClusterStatus},
    metrics::Metrics,
};

/// How soon a reconcile that found the caches not yet listed looks again.
const CACHES_RETRY: Duration = Duration::from_millis(200);
/// Status is rewritten at most this often when only the head height moved.
const STATUS_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no namespace")]
    NoNamespace,
}

/// What every reconcile of one controller shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// How often a cluster is looked at again when nothing happens.
    pub resync: Duration,
    /// What the builders need to know about the cluster (discovered at start).
    pub environment: Environment,
    pub caches: Caches,
    /// Set once every cache has listed (see [`Caches::ready`]).
    pub caches_listed: std::sync::OnceLock<()>,
    /// When each cluster's status was last written (by UID): the rate limit.
    pub status_written: Mutex<HashMap<String, Instant>>,
}

impl Context {
    /// Whether every cache has listed, without waiting.
    fn caches_ready(&self) -> bool {
        if self.caches_listed.get().is_some() {
            return true;
        }
        let ready = matches!(self.caches.ready().now_or_never(), Some(Ok(())));
        if ready {
            let _ = self.caches_listed.set(());
        }
        ready
    }
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

pub async fn reconcile(
    cluster: Arc<LotusFollowerCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        resource = %cluster.name_any(),
        namespace = cluster.namespace().unwrap_or_default(),
        generation = cluster.metadata.generation.unwrap_or_default(),
    );
    let result = reconcile_once(&cluster, &ctx).instrument(span).await;
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
    if !ctx.caches_ready() {
        // Not listed yet: look again shortly. Waiting here would hold one of
        // the controller's reconcile slots, and with every slot held it stops
        // polling the very watches that fill the caches.
        return Ok(Action::requeue(CACHES_RETRY));
    }
    let observed = observe::observe(&ctx.caches, cluster);
    let problems = validate::validate(cluster);
    let mut pass = Pass {
        ctx,
        cluster,
        namespace,
        events: Vec::new(),
    };
    let applied = if cluster.spec.paused || !problems.is_empty() {
        Ok(())
    } else {
        let desired = build::desired(cluster, &ctx.environment);
        match pass.apply(&desired, &observed).await {
            Ok(()) => pass.prune(&desired, &observed).await,
            Err(error) => Err(error),
        }
    };
    // Events for what was done, even when a later step failed.
    let namespace = pass.namespace.clone();
    pass.publish_events().await;
    applied?;
    let now = Timestamp::now();
    let new = status::desired_status(cluster, &observed, &problems, now);
    let lease = observed
        .leases
        .get(&build::child_name(cluster, "ingester"))
        .map(AsRef::as_ref);
    let changes_in = status::next_change(lease, status::max_head_age(cluster), now)
        .unwrap_or(ctx.resync)
        .min(ctx.resync);
    let next = write_status(ctx, &namespace, cluster, new).await?;
    Ok(Action::requeue(
        next.map_or(changes_in, |n| n.min(changes_in)),
    ))
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
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn monitors(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.namespace,
            &monitoring::service_monitor_resource(),
        )
    }

    /// Applies a typed child if it differs from its cached form.
    async fn ensure<K>(
        &mut self,
        desired: &K,
        live: &Owned<K>,
        force: bool,
    ) -> Result<Option<K>, Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        let kind = K::kind(&()).into_owned();
        let name = desired.name_any();
        let live = live.get(&name).map(AsRef::as_ref);
        let applied = apply::ensure(&self.api(), desired, live, force)
            .instrument(write_span("apply", &kind, &name))
            .await?;
        if applied.is_some() {
            self.wrote(&kind, &name, "apply");
        }
        Ok(applied)
    }

    /// Every child, in dependency order.
    async fn apply(&mut self, desired: &Desired, observed: &Observed) -> Result<(), Error> {
        self.ensure(
            &desired.ingester_service_account,
            &observed.service_accounts,
            false,
        )
        .await?;
        self.ensure(
            &desired.ingester_role_binding,
            &observed.role_bindings,
            false,
        )
        .await?;
        let lease = &desired.ingester_lease;
        let live_lease = observed.leases.get(&lease.name_any()).map(AsRef::as_ref);
        if apply::create_lease(&self.api(), lease, live_lease)
            .instrument(write_span("create", "Lease", &lease.name_any()))
            .await?
        {
            self.wrote("Lease", &lease.name_any(), "create");
        }

        // The ingester first: its schema migrations land before followers read.
        let ingester_live = observed.deployments.get(&desired.ingester.name_any());
        let ingester_applied = self
            .ensure(&desired.ingester, &observed.deployments, false)
            .await?
            .is_some();
        let rolled_out =
            rollout::ingester_rolled_out(&desired.ingester, ingester_live.map(AsRef::as_ref));
        self.apply_followers(desired, observed, rolled_out, ingester_applied)
            .await?;

        self.ensure(&desired.rpc_service, &observed.services, false)
            .await?;
        self.ensure(&desired.pdb, &observed.pdbs, false).await?;
        if let Some(hpa) = &desired.hpa {
            self.ensure(hpa, &observed.hpas, false).await?;
        }
        self.ensure(&desired.metrics_service, &observed.services, false)
            .await?;
        if let Some(monitor) = &desired.service_monitor {
            let name = monitor.name_any();
            let live = observed.service_monitors.get(&name).map(AsRef::as_ref);
            if apply::ensure(&self.monitors(), monitor, live, false)
                .instrument(write_span("apply", "ServiceMonitor", &name))
                .await?
                .is_some()
            {
                self.wrote("ServiceMonitor", &name, "apply");
            }
        }
        for policy in &desired.network_policies {
            self.ensure(policy, &observed.network_policies, false)
                .await?;
        }
        Ok(())
    }

    /// The followers' Deployment: its image held until the ingester rolled
    /// out, and with autoscaling, `replicas` handed over to the HPA.
    async fn apply_followers(
        &mut self,
        desired: &Desired,
        observed: &Observed,
        ingester_rolled_out: bool,
        ingester_applied: bool,
    ) -> Result<(), Error> {
        let mut followers = desired.followers.clone();
        let name = followers.name_any();
        let live = observed.deployments.get(&name).map(AsRef::as_ref);
        if rollout::hold_followers_image(&mut followers, live, ingester_rolled_out)
            && ingester_applied
        {
            self.events.push((
                EventType::Normal,
                "WaitingForIngester",
                "the followers keep their image until the ingester has rolled out the new one"
                    .into(),
                None,
            ));
        }
        let Some(scaling) = &self.cluster.spec.followers.autoscaling else {
            self.ensure(&followers, &observed.deployments, false)
                .await?;
            return Ok(());
        };
        // Hand-over: pin the current count under a second field manager, then
        // apply without `replicas` so the operator lets go of it.
        let live = match live {
            Some(live) => live.clone(),
            None => {
                let mut first = followers.clone();
                if let Some(spec) = first.spec.as_mut() {
                    spec.replicas = Some(scaling.min_replicas);
                }
                self.ensure(&first, &Owned::new(), true)
                    .await?
                    .unwrap_or(first)
            }
        };
        let release = rollout::owns_replicas(&live, FIELD_MANAGER);
        if release {
            let replicas = rollout::handover_replicas(&live, scaling.min_replicas);
            apply::pin_replicas(&self.api(), &name, replicas)
                .instrument(write_span("pin-replicas", "Deployment", &name))
                .await?;
            self.ctx.metrics.write("Deployment", "apply");
        }
        self.ensure(&followers, &observed.deployments, release)
            .await?;
        Ok(())
    }

    /// Deletes the children of the kinds that come and go with the spec (the
    /// HPA, the NetworkPolicies) that are no longer desired. Only the
    /// resource's own are candidates (labels and owner reference): nothing a
    /// user made is ever touched.
    async fn prune(&mut self, desired: &Desired, observed: &Observed) -> Result<(), Error> {
        for name in unwanted(&observed.hpas, desired.hpa.iter()) {
            self.delete(
                &self.api::<HorizontalPodAutoscaler>(),
                "HorizontalPodAutoscaler",
                &name,
            )
            .await?;
        }
        for name in unwanted(&observed.network_policies, desired.network_policies.iter()) {
            self.delete(&self.api::<NetworkPolicy>(), "NetworkPolicy", &name)
                .await?;
        }
        Ok(())
    }

    async fn delete<K>(&mut self, api: &Api<K>, kind: &str, name: &str) -> Result<(), Error>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        apply::delete(api, name)
            .instrument(write_span("delete", kind, name))
            .await?;
        self.wrote(kind, name, "delete");
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
            "create" => ("Created", format!("created {kind} {name}")),
            _ => ("Applied", format!("applied {kind} {name}")),
        };
        tracing::info!("{note}");
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
}

/// The names of `observed` children that none of `desired` is.
fn unwanted<'a, K: Resource + 'a>(
    observed: &Owned<K>,
    desired: impl Iterator<Item = &'a K>,
) -> Vec<String> {
    let keep: Vec<String> = desired.map(ResourceExt::name_any).collect();
    observed
        .keys()
        .filter(|name| !keep.contains(name))
        .cloned()
        .collect()
}

fn write_span(verb: &str, kind: &str, name: &str) -> tracing::Span {
    tracing::info_span!("write", verb, kind, name)
}

/// Writes the status with server-side apply when it changed (a
/// head-height-only change at most once per `STATUS_INTERVAL`). Returns when to
/// look again for a deferred head height.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    cluster: &LotusFollowerCluster,
    new: LotusFollowerClusterStatus,
) -> Result<Option<Duration>, Error> {
    if cluster.status.as_ref() == Some(&new) {
        return Ok(None);
    }
    let uid = cluster.uid().unwrap_or_default();
    let since_last = ctx
        .status_written
        .lock()
        .ok()
        .and_then(|written| written.get(&uid).map(Instant::elapsed));
    let old = cluster.status.clone().unwrap_or_default();
    if let Some(since_last) = since_last
        && since_last < STATUS_INTERVAL
        && !status::materially_different(&old, &new)
    {
        // Only the head moved: it is written with the next minute's status.
        return Ok(Some(STATUS_INTERVAL - since_last));
    }
    let patch = json!({
        "apiVersion": LotusFollowerCluster::api_version(&()),
        "kind": LotusFollowerCluster::kind(&()),
        "status": new,
    });
    let name = cluster.name_any();
    Api::<LotusFollowerCluster>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .instrument(write_span("apply-status", "LotusFollowerCluster", &name))
        .await?;
    ctx.metrics.write("LotusFollowerCluster", "status");
    if let Ok(mut written) = ctx.status_written.lock() {
        written.insert(uid, Instant::now());
    }
    Ok(None)
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
