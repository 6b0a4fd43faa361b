//! The test bed's real node: a kubelet with containerd and runc, kube-proxy,
//! CoreDNS and the CNI bridge in a network namespace of the test bed's own,
//! running the images `e2e/testbed up` built from this checkout.
//!
//! Pods here run for real, so these tests prove what kwok's fakes cannot: the
//! follower image starts as a non-root user on a read-only root filesystem,
//! passes its readiness probe, is reached through a ClusterIP Service by name
//! from another pod, and through `kubectl port-forward` from the host.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod, Service},
};
use kube::{
    Api,
    api::{ListParams, LogParams, PostParams},
};
use lotus_follower_e2e::{Check, PortForward, TestBed, TestNamespace, curl, rpc, wait_until};
use lotus_follower_operator::build::DEFAULT_IMAGE;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(90);

fn node_name() -> anyhow::Result<String> {
    std::env::var("LOTUS_FOLLOWER_TESTBED_NODE").map_err(|_| {
        anyhow::anyhow!("LOTUS_FOLLOWER_TESTBED_NODE is not set: eval \"$(e2e/testbed env)\" first")
    })
}

#[tokio::test]
async fn the_real_node_is_ready_beside_kwoks_untouched_nodes() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let nodes = Api::<Node>::all(bed.kube_client().await?);
        let real = nodes.get(&node_name()?).await?;
        let status = real.status.clone().unwrap_or_default();
        let info = status.node_info.clone().unwrap_or_default();
        println!(
            "{}: kubelet {}, {}, kernel {}",
            real.metadata.name.as_deref().unwrap_or_default(),
            info.kubelet_version,
            info.container_runtime_version,
            info.kernel_version
        );
        assert_eq!(info.kubelet_version, "v1.36.3");
        assert!(
            info.container_runtime_version
                .starts_with("containerd://2."),
            "{}",
            info.container_runtime_version
        );
        assert!(is_ready(&real), "the real node is not Ready");
        // Tainted, so pods that do not ask for it (every kwok-tier test) never land there.
        let taints = real
            .spec
            .clone()
            .unwrap_or_default()
            .taints
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == "lotus-follower.io/real-node" && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        // kwok manages only its own nodes: the real one carries none of its marks.
        let annotations = real.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !annotations.keys().any(|k| k.starts_with("kwok.x-k8s.io/")),
            "{annotations:?}"
        );
        let kwok = nodes
            .list(&ListParams::default().labels("type=kwok"))
            .await?;
        assert_eq!(kwok.items.len(), 3);
        for node in &kwok.items {
            assert!(is_ready(node), "{:?} not Ready", node.metadata.name);
            assert_eq!(
                node.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kwok.x-k8s.io/node"))
                    .map(String::as_str),
                Some("fake")
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_follower_image_serves_dev_on_the_real_node() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        let ns = TestNamespace::create(&client, "real-node").await?;
        let node = node_name()?;

        // `dev` (a devnet leader, an ingester and a follower) as a Deployment with
        // a readiness probe on the follower's /health/readyz, behind a Service.
        let started = Instant::now();
        ns.api::<Deployment>()
            .create(
                &PostParams::default(),
                &serde_json::from_value(dev_deployment(&node))?,
            )
            .await?;
        ns.api::<Service>()
            .create(
                &PostParams::default(),
                &serde_json::from_value(dev_service())?,
            )
            .await?;
        let pods = ns.api::<Pod>();
        let dev_pod = wait_until("the dev pod Ready on the real node", READY, || async {
            let list = pods.list(&ListParams::default().labels("app=dev")).await?;
            let ready = list.items.iter().find(|pod| pod_ready(pod)).cloned();
            let seen: Vec<String> = list.items.iter().map(pod_phase).collect();
            Ok(match ready {
                Some(pod) => Check::Done(pod),
                None => Check::Pending(format!("{seen:?}")),
            })
        })
        .await?;
        let dev_name = dev_pod.metadata.name.clone().unwrap_or_default();
        let spec = dev_pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
        println!(
            "dev pod {dev_name} Ready {:.1}s after the Deployment was created",
            started.elapsed().as_secs_f64()
        );

        // Another pod reaches it by Service name (CoreDNS, kube-proxy): an
        // ingester following the follower's ChainHead.
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(ingester_pod(&node, &ns.name))?,
        )
        .await?;
        let ingested = wait_until(
            "the in-cluster ingester's log showing heights ingested from dev's Service",
            READY,
            || async {
                let log = pods
                    .logs("ingester", &LogParams::default())
                    .await
                    .unwrap_or_default();
                let height = log
                    .lines()
                    .filter_map(|line| line.split("ingested height=").nth(1))
                    .filter_map(|rest| rest.split_whitespace().next()?.parse::<i64>().ok())
                    .max();
                Ok(match height {
                    Some(height) if height > 0 => Check::Done(height),
                    _ => Check::Pending(last_lines(&log, 3)),
                })
            },
        )
        .await?;
        println!("an ingester pod followed dev's Service by name to height {ingested}");

        // From the host: kubectl port-forward through the API server and the kubelet.
        let forward = PortForward::start(&ns.name, &format!("pod/{dev_name}"), &[1234, 9091])?;
        let url = format!("http://127.0.0.1:{}/rpc/v1", forward.local_ports[0]);
        let head = rpc(&url, "Filecoin.ChainHead", json!([]))?;
        let height = head["result"]["Height"].as_i64().unwrap_or(-1);
        println!("ChainHead through port-forward: height {height}");
        assert!(height >= 0, "{head}");
        for _ in 0..4 {
            rpc(&url, "Filecoin.ChainHead", json!([]))?;
        }
        let metrics = curl(&[&format!(
            "http://127.0.0.1:{}/metrics",
            forward.local_ports[1]
        )])?;
        let calls: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("lotus_follower_rpc_requests_total")
                    && line.contains("method=\"Filecoin.ChainHead\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        println!("lotus_follower_rpc_requests_total for ChainHead: {calls}");
        assert!(calls >= 5.0, "{calls} ChainHead calls counted");

        // kubectl logs shows the container's log.
        let log = pods.logs(&dev_name, &LogParams::default()).await?;
        assert!(log.contains("serving"), "{}", last_lines(&log, 10));
        ns.delete().await?;
        Ok(())
    })
    .await
}

/// The pod-level settings every real-node pod here uses: scheduled on the real
/// node (tolerating its taint), restricted Pod Security, a writable /tmp only.
fn restricted_pod(node: &str, containers: Value) -> Value {
    json!({
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": "lotus-follower.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 5,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "containers": containers,
    })
}

fn container(name: &str, args: &[&str]) -> Value {
    json!({
        "name": name,
        "image": DEFAULT_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        "env": [{"name": "RUST_LOG", "value": "info"}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
    })
}

fn dev_deployment(node: &str) -> Value {
    let mut dev = container(
        "dev",
        &[
            "dev",
            "--listen=0.0.0.0:1234",
            "--leader-listen=0.0.0.0:1235",
            "--metrics-listen=0.0.0.0:9091",
            "--block-time=2s",
        ],
    );
    dev["ports"] =
        json!([{"name": "rpc", "containerPort": 1234}, {"name": "metrics", "containerPort": 9091}]);
    dev["readinessProbe"] =
        json!({"httpGet": {"path": "/health/readyz", "port": "rpc"}, "periodSeconds": 1});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "dev"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "dev"}},
            "template": {
                "metadata": {"labels": {"app": "dev"}},
                "spec": restricted_pod(node, json!([dev])),
            },
        },
    })
}

fn dev_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dev"},
        "spec": {"selector": {"app": "dev"}, "ports": [{"name": "rpc", "port": 1234, "targetPort": "rpc"}]},
    })
}

fn ingester_pod(node: &str, namespace: &str) -> Value {
    let leader = format!("--leader=http://dev.{namespace}.svc.cluster.local:1234/rpc/v1");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ingester"},
        "spec": restricted_pod(node, json!([container(
            "ingester",
            &["ingest", &leader, "--store=embedded:/tmp/store", "--network=devnet", "--metrics-listen=127.0.0.1:9091"],
        )])),
    })
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_phase(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let waiting = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.state?.waiting?.reason)
        .collect::<Vec<_>>();
    format!(
        "{} {}{waiting:?}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        status.phase.unwrap_or_default()
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
