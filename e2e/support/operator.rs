//! The operator under test: run in-process (`run_until`, the binary's own code
//! path) as its own ServiceAccount, whose only permissions are the shipped
//! RBAC of `manifests/install.yaml`, the chart rendered with its defaults
//! (ServiceAccount and election Role in the test's namespace, the ClusterRoles
//! as they are, the operator's bound by a binding of the instance's own).
//! Every request it makes is authorized (and audited) as it would be in a cluster.

use std::{net::SocketAddr, path::Path, time::Duration};

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use lotus_follower_operator::run::{Election, Options, run_until};
use serde::Deserialize;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

use crate::{TestBed, TestNamespace};

/// The operator's ServiceAccount and leader-election Lease name, as shipped.
pub const OPERATOR: &str = "lotus-follower-operator";

pub struct TestOperator {
    /// `system:serviceaccount:<ns>:lotus-follower-operator`, as the audit log names it.
    pub user: String,
    pub metrics: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    admin: Client,
    binding: String,
}

impl std::fmt::Debug for TestOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOperator")
            .field("user", &self.user)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// The shipped RBAC documents (`manifests/install.yaml`'s RBAC: the chart's
/// with its default values), as JSON.
pub fn shipped_rbac() -> anyhow::Result<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/install.yaml");
    let text = std::fs::read_to_string(&path)?;
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Ok::<_, anyhow::Error>(serde_json::to_value(serde_yaml::Value::deserialize(
                document,
            )?)?)
        })
        .collect::<Result<_, _>>()?;
    // The RBAC only: not the namespace, the CRD or the operator's workload.
    Ok(documents
        .into_iter()
        .filter(|document| {
            matches!(
                document["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect())
}

/// Re-homes the shipped RBAC into `ns`: the ServiceAccount and the election
/// Role there, the ClusterRole as is, and a ClusterRoleBinding of this
/// instance's own (so stopping one instance leaves another its permissions).
/// Returns the binding's name (the caller deletes it).
pub async fn install_operator_rbac(
    admin: &Client,
    ns: &TestNamespace,
    identity: &str,
) -> anyhow::Result<String> {
    let apply = PatchParams::apply("lotus-follower-e2e").force();
    let binding = format!("{OPERATOR}-{}-{identity}", ns.name);
    for mut document in shipped_rbac()? {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        if document["metadata"].get("namespace").is_some() {
            document["metadata"]["namespace"] = ns.name.clone().into();
        }
        for subject in document["subjects"].as_array_mut().into_iter().flatten() {
            subject["namespace"] = ns.name.clone().into();
        }
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match kind.as_str() {
            "ServiceAccount" => {
                let object: ServiceAccount = serde_json::from_value(document)?;
                ns.api::<ServiceAccount>()
                    .patch(&name, &apply, &Patch::Apply(&object))
                    .await?;
            }
            "ClusterRole" => {
                let object: ClusterRole = serde_json::from_value(document)?;
                Api::<ClusterRole>::all(admin.clone())
                    .patch(&name, &apply, &Patch::Apply(&object))
                    .await?;
            }
            "ClusterRoleBinding" => {
                document["metadata"]["name"] = binding.clone().into();
                let object: ClusterRoleBinding = serde_json::from_value(document)?;
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .patch(&binding, &apply, &Patch::Apply(&object))
                    .await?;
            }
            "Role" => {
                let object: Role = serde_json::from_value(document)?;
                ns.api::<Role>()
                    .patch(&name, &apply, &Patch::Apply(&object))
                    .await?;
            }
            "RoleBinding" => {
                let object: RoleBinding = serde_json::from_value(document)?;
                ns.api::<RoleBinding>()
                    .patch(&name, &apply, &Patch::Apply(&object))
                    .await?;
            }
            other => anyhow::bail!("unexpected kind {other} in manifests/install.yaml"),
        }
    }
    Ok(binding)
}

/// The sum of every series of the metric `name` in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl TestOperator {
    /// Starts the operator on `ns` only, electing itself on its Lease there
    /// as `identity` (a second identity waits as a standby).
    pub async fn start(
        bed: &TestBed,
        admin: &Client,
        ns: &TestNamespace,
        identity: &str,
        resync: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_watching(bed, admin, ns, identity, resync, &[ns]).await
    }

    /// Starts the operator at home in `ns` (its ServiceAccount and election
    /// Lease) watching the namespaces `watched`.
    pub async fn start_watching(
        bed: &TestBed,
        admin: &Client,
        ns: &TestNamespace,
        identity: &str,
        resync: Duration,
        watched: &[&TestNamespace],
    ) -> anyhow::Result<Self> {
        let binding = install_operator_rbac(admin, ns, identity).await?;
        let client = bed.service_account_client(ns, OPERATOR).await?;
        let metrics = crate::free_address()?;
        let options = Options {
            namespaces: watched.iter().map(|watched| watched.name.clone()).collect(),
            metrics_listen: metrics,
            election: Some(Election {
                namespace: ns.name.clone(),
                lease: OPERATOR.into(),
                identity: identity.into(),
            }),
            resync,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_until(client, options, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            user: format!("system:serviceaccount:{}:{OPERATOR}", ns.name),
            metrics,
            stop,
            task,
            admin: admin.clone(),
            binding,
        })
    }

    /// A GET on the operator's metrics and health listener: the whole response.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(self.metrics).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: operator\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    /// The sum of every series of the metric `name` on the operator's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(metric_sum(&self.get("/metrics").await?, name))
    }

    /// Stops it (releasing its Lease) and removes the cluster-wide binding.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        Api::<ClusterRoleBinding>::all(self.admin)
            .delete(&self.binding, &DeleteParams::default())
            .await?;
        result???;
        Ok(())
    }
}
