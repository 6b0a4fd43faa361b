//! `lotus-follower-operator run`: the metrics and health listener, leader
//! election on a Lease (one active operator; standbys wait), and the controller
//! watching the resource and every kind it owns, until SIGTERM or Ctrl-C.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        core::v1::{Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
};
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::{
    apply::FIELD_MANAGER,
    crd::LotusFollowerCluster,
    metrics::{self, Metrics},
    reconcile::{self, Context},
};

#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (`None`: all).
    pub namespace: Option<String>,
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
            controller(client, &options, metrics, stopped(stop_receiver)).await;
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
        controller(client, options, metrics.clone(), until).await;
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

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn controller(
    client: Client,
    options: &Options,
    metrics: Metrics,
    until: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = options.namespace.as_deref();
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: options
            .election
            .as_ref()
            .map(|election| election.identity.clone()),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        resync: options.resync,
        status_written: std::sync::Mutex::new(HashMap::new()),
    });
    // Only the operator's own children: no cache of every Lease or Service in the cluster.
    let config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(
        api::<LotusFollowerCluster>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, namespace), config.clone())
    .owns(api::<Service>(&client, namespace), config.clone())
    .owns(
        api::<PodDisruptionBudget>(&client, namespace),
        config.clone(),
    )
    .owns(
        api::<HorizontalPodAutoscaler>(&client, namespace),
        config.clone(),
    )
    .owns(api::<ServiceAccount>(&client, namespace), config.clone())
    .owns(api::<Role>(&client, namespace), config.clone())
    .owns(api::<RoleBinding>(&client, namespace), config.clone())
    .owns(api::<Lease>(&client, namespace), config)
    .graceful_shutdown_on(until)
    .run(reconcile::reconcile, reconcile::error_policy, context)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(%object, "reconciled"),
            Err(error) => tracing::debug!("reconcile error: {error}"),
        }
    })
    .await;
    tracing::info!("controller stopped");
}
