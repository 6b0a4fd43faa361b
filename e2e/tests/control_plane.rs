//! Smoke tests proving the test bed's Kubernetes tier is real: the API server,
//! scheduler, controller-manager (with its host-path provisioner and HPA
//! controller), kwok's nodes, metrics-server behind the aggregation layer, and the
//! audit log.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod},
};
use kube::{
    Api,
    api::{ListParams, ObjectList, Patch, PatchParams, PostParams},
};
use lotus_follower_e2e::{Check, TestBed, TestNamespace, wait_until};
use serde_json::json;

const POD_READY: Duration = Duration::from_secs(60);

#[tokio::test]
async fn api_server_is_the_pinned_release() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let version = bed.kube_client().await?.apiserver_version().await?;
        println!("API server version: {}", version.git_version);
        // The Rust clients are built against k8s-openapi's `v1_36` API surface.
        assert_eq!(
            (version.major.as_str(), version.minor.as_str()),
            ("1", "36")
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deployment_pods_become_ready() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let ns = TestNamespace::create(&bed.kube_client().await?, "deployment").await?;
        let deployments = ns.api::<Deployment>();
        deployments
            .create(&PostParams::default(), &deployment("web", 3, "1m")?)
            .await?;

        wait_until("3 of 3 pods of deployment web ready", POD_READY, || async {
            let status = deployments
                .get_status("web")
                .await?
                .status
                .unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or(0);
            Ok(Check::when(ready == 3, (), format!("{ready}/3 ready")))
        })
        .await?;
        let pods = pods_of(&ns.api::<Pod>(), "web").await?;
        for pod in &pods {
            let spec = pod.spec.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            println!(
                "pod {} on {}: phase {}, ready {}, IP {}",
                name_of(pod),
                spec.node_name.as_deref().unwrap_or("-"),
                status.phase.as_deref().unwrap_or("-"),
                is_ready(pod),
                status.pod_ip.as_deref().unwrap_or("-"),
            );
            assert!(
                spec.node_name
                    .is_some_and(|node| node.starts_with("kwok-node-"))
            );
            assert_eq!(status.phase.as_deref(), Some("Running"));
            assert!(is_ready(pod));
        }
        assert_eq!(pods.items.len(), 3);
        ns.delete().await
    })
    .await
}

#[tokio::test]
async fn statefulset_claim_binds_and_pod_becomes_ready() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let ns = TestNamespace::create(&bed.kube_client().await?, "statefulset").await?;
        let statefulset: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{
                        "name": "db",
                        "image": "registry.invalid/db:1",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }]},
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }],
            },
        }))?;
        ns.api::<StatefulSet>()
            .create(&PostParams::default(), &statefulset)
            .await?;

        let claims = ns.api::<PersistentVolumeClaim>();
        let claim = wait_until("claim data-db-0 bound", POD_READY, || async {
            let claim = claims.get_opt("data-db-0").await?;
            let phase = claim
                .as_ref()
                .and_then(|claim| claim.status.as_ref()?.phase.clone())
                .unwrap_or_else(|| "absent".into());
            Ok(match claim {
                Some(claim) if phase == "Bound" => Check::Done(claim),
                _ => Check::Pending(phase),
            })
        })
        .await?;
        let spec = claim.spec.unwrap_or_default();
        println!(
            "claim data-db-0 bound to volume {} of class {}",
            spec.volume_name.as_deref().unwrap_or("-"),
            spec.storage_class_name.as_deref().unwrap_or("-"),
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));

        let pods = ns.api::<Pod>();
        wait_until("pod db-0 ready", POD_READY, || async {
            let pod = pods.get_opt("db-0").await?;
            let ready = pod.as_ref().is_some_and(is_ready);
            Ok(Check::when(
                ready,
                (),
                if pod.is_some() { "not ready" } else { "absent" },
            ))
        })
        .await?;
        println!("pod db-0 of statefulset db ready");
        ns.delete().await
    })
    .await
}

#[tokio::test]
async fn hpa_scales_on_emulated_cpu_up_and_down() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let ns = TestNamespace::create(&bed.kube_client().await?, "hpa").await?;
        // Each pod requests 100m and (kwok's emulation) uses 200m: 200% of its
        // request against a 50% target, so the HPA goes straight to its maximum.
        ns.api::<Deployment>()
            .create(&PostParams::default(), &deployment("busy", 1, "200m")?)
            .await?;
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "busy"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                }}],
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0},
                    "scaleDown": {"stabilizationWindowSeconds": 0},
                },
            },
        }))?;
        let hpas = ns.api::<HorizontalPodAutoscaler>();
        hpas.create(&PostParams::default(), &hpa).await?;

        let started = Instant::now();
        wait_for_replicas(&hpas, "busy", 3).await?;
        println!(
            "HPA scaled busy 1 -> 3 on emulated CPU in {:.1}s",
            started.elapsed().as_secs_f64()
        );

        // Usage falls to 10m (10% of the request) on every running pod.
        let pods = ns.api::<Pod>();
        for pod in pods_of(&pods, "busy").await? {
            let patch = json!({"metadata": {"annotations": {"kwok.x-k8s.io/usage-cpu": "10m"}}});
            pods.patch(
                &name_of(&pod),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        }
        let started = Instant::now();
        wait_for_replicas(&hpas, "busy", 1).await?;
        println!(
            "HPA scaled busy 3 -> 1 on emulated CPU in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        ns.delete().await
    })
    .await
}

#[tokio::test]
async fn audit_log_attributes_a_write_to_its_user() -> anyhow::Result<()> {
    use k8s_openapi::api::{core::v1::ServiceAccount, rbac::v1::RoleBinding};

    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.kube_client().await?;
        let ns = TestNamespace::create(&admin, "audit").await?;
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "writer"}}))?;
        let accounts = ns.api::<ServiceAccount>();
        accounts.create(&PostParams::default(), &account).await?;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "writer-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": ns.name}],
        }))?;
        ns.api::<RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await?;
        let writer = bed.service_account_client(&ns, "writer").await?;
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "audited"},
            "data": {"written-by": "writer"},
        }))?;
        Api::<ConfigMap>::namespaced(writer, &ns.name)
            .create(&PostParams::default(), &config_map)
            .await?;

        let user = format!("system:serviceaccount:{}:writer", ns.name);
        let writes = wait_until("the audit log to record the service account's write", POD_READY, || async {
            let writes: Vec<_> = bed
                .audited_writes_since(0)?
                .into_iter()
                .filter(|write| write.namespace.as_deref() == Some(ns.name.as_str()))
                .collect();
            let seen = format!("{} writes in the namespace", writes.len());
            Ok(Check::when(writes.iter().any(|event| event.user == user), writes, seen))
        })
        .await?;
        let by_user: Vec<_> = writes.iter().filter(|event| event.user == user).collect();
        println!("audit log: {} write(s) by {user}: {by_user:?}", by_user.len());
        assert_eq!(by_user.len(), 1, "exactly the one write the service account made");
        assert_eq!((by_user[0].verb.as_str(), by_user[0].resource.as_str()), ("create", "configmaps"));
        assert_eq!(by_user[0].name.as_deref(), Some("audited"));
        // The set-up writes in the same namespace are the admin's, not the account's.
        assert!(writes.iter().any(|event| event.user == "testbed-admin" && event.resource == "rolebindings"));
        ns.delete().await
    })
    .await
}

async fn wait_for_replicas(
    hpas: &Api<HorizontalPodAutoscaler>,
    name: &str,
    want: i32,
) -> anyhow::Result<()> {
    wait_until(
        &format!("HPA {name} at {want} replicas"),
        Duration::from_secs(180),
        || async {
            let status = hpas.get_status(name).await?.status.unwrap_or_default();
            let observed = format!(
                "current {}, desired {}, conditions {:?}",
                status.current_replicas.unwrap_or(0),
                status.desired_replicas,
                status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .map(|c| format!(
                        "{}={} ({})",
                        c.type_,
                        c.status,
                        c.message.as_deref().unwrap_or("")
                    ))
                    .collect::<Vec<_>>(),
            );
            Ok(Check::when(
                status.desired_replicas == want && status.current_replicas == Some(want),
                (),
                observed,
            ))
        },
    )
    .await?;
    Ok(())
}

/// A Deployment of pods requesting 100m CPU whose emulated usage is `cpu_usage`.
fn deployment(name: &str, replicas: i32, cpu_usage: &str) -> anyhow::Result<Deployment> {
    let value = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"kwok.x-k8s.io/usage-cpu": cpu_usage},
                },
                "spec": {"containers": [{
                    "name": name,
                    "image": "registry.invalid/app:1",
                    "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}},
                }]},
            },
        },
    });
    Ok(serde_json::from_value(value)?)
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> anyhow::Result<ObjectList<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?)
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
