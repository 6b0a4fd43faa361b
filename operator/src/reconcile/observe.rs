//! Observe: what exists of a resource's children, read from the controller's
//! reflector caches, never from the API server. The watches behind the caches
//! see only objects labelled as the operator's; a child counts as the
//! resource's when its owner reference names the resource's UID.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    coordination::v1::Lease,
    core::v1::{Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::RoleBinding,
};
use kube::{
    Resource, ResourceExt,
    api::DynamicObject,
    runtime::reflector::{Store, store::WriterDropped},
};

use crate::crd::LotusFollowerCluster;

/// One kind's children of one resource, by name.
pub type Owned<K> = BTreeMap<String, Arc<K>>;

/// The reflector stores of every kind the operator makes, fed by the
/// controller's watches (one set per watched namespace, or one for all).
#[derive(Clone)]
pub struct Caches {
    pub service_accounts: Store<ServiceAccount>,
    pub role_bindings: Store<RoleBinding>,
    pub leases: Store<Lease>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub network_policies: Store<NetworkPolicy>,
    /// Only where the cluster serves the ServiceMonitor kind.
    pub service_monitors: Option<Store<DynamicObject>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("deployments", &self.deployments.state().len())
            .field("leases", &self.leases.state().len())
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Resolves once every cache holds its first full list: before that, an
    /// absent child may only be not listed yet, and applying it would be a
    /// needless write on every operator start. (A store's readiness wakes only
    /// the last task that polled it: reconciles poll this without waiting.)
    pub async fn ready(&self) -> Result<(), WriterDropped> {
        futures::try_join!(
            self.service_accounts.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.leases.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.pdbs.wait_until_ready(),
            self.hpas.wait_until_ready(),
            self.network_policies.wait_until_ready(),
        )?;
        if let Some(monitors) = &self.service_monitors {
            monitors.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Everything of one resource's children the reconcile reads.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub service_accounts: Owned<ServiceAccount>,
    pub role_bindings: Owned<RoleBinding>,
    pub leases: Owned<Lease>,
    pub deployments: Owned<Deployment>,
    pub services: Owned<Service>,
    pub pdbs: Owned<PodDisruptionBudget>,
    pub hpas: Owned<HorizontalPodAutoscaler>,
    pub network_policies: Owned<NetworkPolicy>,
    pub service_monitors: Owned<DynamicObject>,
}

pub fn observe(caches: &Caches, cluster: &LotusFollowerCluster) -> Observed {
    let uid = cluster.uid().unwrap_or_default();
    let namespace = cluster.namespace();
    Observed {
        service_accounts: owned(&caches.service_accounts, &uid, namespace.as_deref()),
        role_bindings: owned(&caches.role_bindings, &uid, namespace.as_deref()),
        leases: owned(&caches.leases, &uid, namespace.as_deref()),
        deployments: owned(&caches.deployments, &uid, namespace.as_deref()),
        services: owned(&caches.services, &uid, namespace.as_deref()),
        pdbs: owned(&caches.pdbs, &uid, namespace.as_deref()),
        hpas: owned(&caches.hpas, &uid, namespace.as_deref()),
        network_policies: owned(&caches.network_policies, &uid, namespace.as_deref()),
        service_monitors: caches
            .service_monitors
            .as_ref()
            .map(|store| owned(store, &uid, namespace.as_deref()))
            .unwrap_or_default(),
    }
}

fn owned<K>(store: &Store<K>, uid: &str, namespace: Option<&str>) -> Owned<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|object| object.namespace().as_deref() == namespace)
        .filter(|object| object.owner_references().iter().any(|o| o.uid == uid))
        .map(|object| (object.name_any(), object))
        .collect()
}

/// (ready, desired) replicas of a Deployment, (0, 0) when it is absent.
pub fn replicas(deployment: Option<&Arc<Deployment>>) -> (i32, i32) {
    deployment.map_or((0, 0), |deployment| {
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
}
