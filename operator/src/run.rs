//! `lotus-follower-operator run`: the metrics and health listener, leader
//! election on a Lease (one active operator; standbys wait), and the controller
//! watching the resource and every kind it owns, until SIGTERM or Ctrl-C.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        core::v1::{Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::RoleBinding,
    },
};
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt, controller,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{
    build::{Environment, monitoring},
    crd::LotusFollowerCluster,
    metrics::{self, Metrics},
    reconcile::{self, Context, apply::FIELD_MANAGER, observe::Caches},
};

/// Reconciles running at once per controller: enough to create a hundred
/// fleets quickly, few enough not to flood the API server after a restart.
const CONCURRENCY: u16 = 16;
/// How often API discovery is repeated to notice a kind appearing or going.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    pub metrics_listen: SocketAddr,
    /// Leader election; `None` runs the controller at once (one replica only).
    pub election: Option<Election>,
    pub resync: Duration,
}

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    /// This instance's identity, usually its pod name.
    pub identity: String,
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(client: Client, options: Options) -> anyhow::Result<()> {
    run_until(client, options, terminated()).await
}

/// Runs until `stop` resolves (tests pass their own), then stops the
/// controller, releases the Lease and closes the listener.
pub async fn run_until(
    client: Client,
    options: Options,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let (stop_sender, stop_receiver) = watch::channel(false);
    let stop_sender = Arc::new(stop_sender);
    let forward = stop_sender.clone();
    tokio::spawn(async move {
        stop.await;
        let _ = forward.send(true);
    });
    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };

    let (address, listener) = metrics::serve(
        options.metrics_listen,
        metrics.clone(),
        stopped(stop_receiver.clone()),
    )
    .await?;
    tracing::info!(%address, "metrics and health listener");
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "API server reached");
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let result = match &options.election {
        None => {
            controllers(client, &options, metrics, stopped(stop_receiver)).await;
            Ok(())
        }
        Some(election) => lead(client, &options, election, metrics, stop_receiver.clone()).await,
    };
    // However the controller ended (a stop, a lost Lease), close the listener
    // too, so the process exits and the pod restarts to compete again.
    stop_sender.send_replace(true);
    let _ = listener.await;
    result
}

/// Waits for the Lease, runs the controller while it is held, and releases
/// it on the way out. Losing it stops the process's controller: a restart
/// competes again rather than risking two writers.
async fn lead(
    client: Client,
    options: &Options,
    election: &Election,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_field_manager(format!("{FIELD_MANAGER}-election"))
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease = %election.lease, identity = %election.identity, "waiting for the leader-election Lease");
    let acquired = tokio::select! {
        changed = leading.wait_for(|leading| *leading) => changed.is_ok(),
        _ = stop.wait_for(|stop| *stop) => false,
    };
    let mut lost = false;
    if acquired {
        metrics.leader.set(1);
        tracing::info!("leading: starting the controller");
        let mut watching = leading.clone();
        let mut stopping = stop.clone();
        let until = async move {
            tokio::select! {
                _ = watching.wait_for(|leading| !*leading) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        };
        controllers(client, options, metrics.clone(), until).await;
        lost = !*stop.borrow() && !*leading.borrow();
        metrics.leader.set(0);
    }
    // Closing the channel ends the manager's task; it hands the manager back to release.
    drop(leading);
    let manager = task.await??;
    manager.release().await?;
    if lost {
        anyhow::bail!("lost the leader-election Lease");
    }
    Ok(())
}

/// Whether the cluster serves the ServiceMonitor kind (API discovery).
async fn serves_service_monitors(client: &Client) -> Result<bool, kube::Error> {
    let resource = monitoring::service_monitor_resource();
    match client.list_api_group_resources(&resource.api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == resource.plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// What the builders need to know of the cluster, discovered once per
/// controller run (not per reconcile).
async fn discover(client: &Client, options: &Options) -> Result<Environment, kube::Error> {
    Ok(Environment {
        operator_namespace: options
            .election
            .as_ref()
            .map(|election| election.namespace.clone()),
        service_monitors: serves_service_monitors(client).await?,
    })
}

/// Resolves when discovery no longer finds what `environment` says (the
/// Prometheus Operator's CRD installed or removed), looking every [`REDISCOVERY_INTERVAL`].
async fn rediscovered(client: Client, options: Options, environment: Environment) {
    loop {
        tokio::time::sleep(REDISCOVERY_INTERVAL).await;
        match discover(&client, &options).await {
            Ok(now) if now != environment => {
                tracing::info!(
                    ?now,
                    "the cluster's APIs changed: restarting the controllers"
                );
                return;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("API discovery: {error}"),
        }
    }
}

/// The controllers, one per watched namespace (or one for all), until `until`
/// resolves; restarted with fresh watches when discovery changes.
async fn controllers(
    client: Client,
    options: &Options,
    metrics: Metrics,
    until: impl Future<Output = ()> + Send + 'static,
) {
    let until = until.boxed().shared();
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: options
            .election
            .as_ref()
            .map(|election| election.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let namespaces: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    loop {
        let environment = loop {
            match discover(&client, options).await {
                Ok(environment) => break environment,
                Err(error) => {
                    tracing::warn!("API discovery: {error}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = until.clone() => return,
                    }
                }
            }
        };
        let restart = rediscovered(client.clone(), options.clone(), environment.clone());
        let stop = {
            let until = until.clone();
            async move {
                tokio::select! {
                    _ = until => {}
                    _ = restart => {}
                }
            }
            .boxed()
            .shared()
        };
        let runs = namespaces.iter().map(|namespace| {
            let shared = Shared {
                client: client.clone(),
                recorder: recorder.clone(),
                metrics: metrics.clone(),
                resync: options.resync,
                environment: environment.clone(),
            };
            controller(shared, namespace.as_deref(), stop.clone())
        });
        futures::future::join_all(runs).await;
        if until.clone().now_or_never().is_some() {
            return;
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Only the operator's own children: no cache of every Lease or Service in the cluster.
fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"))
}

/// A watch of one kind of child kept in a reflector store, and the stream of
/// touched objects that wakes the owner's reconcile.
fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api::<K>(client, namespace), owned_config())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// What of a Lease the status reads: its holder and the ingester's
/// annotations. A renewal changes neither and wakes nothing.
fn lease_report(lease: &Lease) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_ref())
        .hash(&mut hasher);
    let annotations = lease.metadata.annotations.as_ref();
    for key in lotus_follower_interfaces::lease::ANNOTATIONS {
        annotations.and_then(|a| a.get(key)).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// What the controllers of one run share.
struct Shared {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    resync: Duration,
    environment: Environment,
}

async fn controller(
    shared: Shared,
    namespace: Option<&str>,
    until: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = shared.client.clone();
    let (service_accounts, service_account_events) = cached::<ServiceAccount>(&client, namespace);
    let (role_bindings, role_binding_events) = cached::<RoleBinding>(&client, namespace);
    let (leases, lease_events) = cached::<Lease>(&client, namespace);
    let (deployments, deployment_events) = cached::<Deployment>(&client, namespace);
    let (services, service_events) = cached::<Service>(&client, namespace);
    let (pdbs, pdb_events) = cached::<PodDisruptionBudget>(&client, namespace);
    let (hpas, hpa_events) = cached::<HorizontalPodAutoscaler>(&client, namespace);
    let (network_policies, network_policy_events) = cached::<NetworkPolicy>(&client, namespace);
    let lease_events = lease_events.predicate_filter(lease_report, PredicateConfig::default());
    let mut controller = Controller::new(
        api::<LotusFollowerCluster>(&client, namespace),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(CONCURRENCY))
    .owns_stream(service_account_events)
    .owns_stream(role_binding_events)
    .owns_stream(lease_events)
    .owns_stream(deployment_events)
    .owns_stream(service_events)
    .owns_stream(pdb_events)
    .owns_stream(hpa_events)
    .owns_stream(network_policy_events);
    let mut service_monitors = None;
    if shared.environment.service_monitors {
        let resource = monitoring::service_monitor_resource();
        let writer = reflector::store::Writer::new(resource.clone());
        service_monitors = Some(writer.as_reader());
        let api = match namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let events = watcher(api, owned_config())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        controller = controller.owns_stream_with(events, resource);
    }
    let environment = shared.environment.clone();
    let context = Context {
        client: shared.client,
        recorder: shared.recorder,
        metrics: shared.metrics,
        resync: shared.resync,
        environment: shared.environment,
        caches: Caches {
            service_accounts,
            role_bindings,
            leases,
            deployments,
            services,
            pdbs,
            hpas,
            network_policies,
            service_monitors,
        },
        caches_listed: std::sync::OnceLock::new(),
        status_written: std::sync::Mutex::new(HashMap::new()),
    };
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        ?environment,
        "controller started"
    );
    controller
        .graceful_shutdown_on(until)
        .run(
            reconcile::reconcile,
            reconcile::error_policy,
            Arc::new(context),
        )
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!("reconcile error: {error}"),
            }
        })
        .await;
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        "controller stopped"
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::Timestamp,
    };
    use kube::api::ObjectMeta;
    use lotus_follower_interfaces::lease::{HEAD_HEIGHT, STORE};

    use super::*;

    fn lease(holder: &str, renewed: Timestamp, annotations: &[(&str, &str)]) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_renewal_wakes_nothing_a_report_or_a_new_holder_does() {
        let now = Timestamp::now();
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(10);
        let report = [
            (HEAD_HEIGHT, "10"),
            (STORE, "ok"),
            ("other/annotation", "a"),
        ];
        let base = lease_report(&lease("a", now, &report));
        assert_eq!(base, lease_report(&lease("a", later, &report)), "a renewal");
        let unrelated = [
            (HEAD_HEIGHT, "10"),
            (STORE, "ok"),
            ("other/annotation", "b"),
        ];
        assert_eq!(base, lease_report(&lease("a", now, &unrelated)));
        let moved = [
            (HEAD_HEIGHT, "11"),
            (STORE, "ok"),
            ("other/annotation", "a"),
        ];
        assert_ne!(base, lease_report(&lease("a", now, &moved)), "a new head");
        assert_ne!(
            base,
            lease_report(&lease("b", now, &report)),
            "a new holder"
        );
    }
}
