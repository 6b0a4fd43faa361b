//! The whole fleet as real pods on the test bed's real node, as a user runs it
//! (`e2e/testbed demo`): the operator installed with its Helm chart, a devnet
//! leader pod, the test bed's Cassandra behind a Service, and a
//! `LotusFollowerCluster` whose ingester and followers run exactly what the
//! operator generated. Traffic goes through the fleet's `<name>-rpc` Service.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Pod, Service},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams},
};
use lotus_follower_e2e::{Check, PortForward, TestBed, curl, rpc, wait_until};
use lotus_follower_operator::{
    build::{followers, ingester},
    crd::LotusFollowerCluster,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SETTLE: Duration = Duration::from_secs(180);

/// What `e2e/testbed demo` printed.
#[derive(Debug)]
struct Demo {
    rpc: String,
    namespace: String,
    resource: String,
    leader_service: String,
}

impl Demo {
    fn start() -> anyhow::Result<Self> {
        let testbed = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed");
        let output = Command::new(testbed)
            .arg("demo")
            .stderr(Stdio::inherit())
            .output()?;
        anyhow::ensure!(output.status.success(), "e2e/testbed demo failed");
        let exports = String::from_utf8(output.stdout)?;
        let value = |name: &str| -> anyhow::Result<String> {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .ok_or_else(|| anyhow::anyhow!("demo printed no {name}: {exports}"))
        };
        Ok(Self {
            rpc: value("LOTUS_FOLLOWER_DEMO_RPC")?,
            namespace: value("LOTUS_FOLLOWER_DEMO_NAMESPACE")?,
            resource: value("LOTUS_FOLLOWER_DEMO_RESOURCE")?,
            leader_service: value("LOTUS_FOLLOWER_DEMO_LEADER_SERVICE")?,
        })
    }
}

#[tokio::test]
async fn the_fleet_runs_as_pods_behind_its_service() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let started = Instant::now();
        let demo = tokio::task::spawn_blocking(Demo::start).await??;
        println!("e2e/testbed demo: Ready in {:.0}s: {demo:?}", started.elapsed().as_secs_f64());
        let client = bed.kube_client().await?;
        let ns = demo.namespace.as_str();
        let fleets = Api::<LotusFollowerCluster>::namespaced(client.clone(), ns);
        let pods = Api::<Pod>::namespaced(client.clone(), ns);

        // Ready (the demo waited for it), then the conditions the real
        // ingester's Lease drives, as its first heads are published.
        let conditions = ["Ready", "HeadInSync", "LeaderReady", "DatabaseReady"];
        let status = wait_until("HeadInSync, LeaderReady and DatabaseReady True", SETTLE, || async {
            let status = fleets.get(&demo.resource).await?.status.unwrap_or_default();
            let not_true: Vec<String> = conditions
                .iter()
                .filter(|name| {
                    !status.conditions.iter().any(|c| c.type_ == **name && c.status == "True")
                })
                .map(|name| name.to_string())
                .collect();
            Ok(Check::when(not_true.is_empty(), status, format!("not True: {not_true:?}")))
        })
        .await?;
        println!(
            "status after {:.0}s: phase {:?}, followers {:?}, head {:?}",
            started.elapsed().as_secs_f64(),
            status.phase,
            status.followers,
            status.head_height
        );

        // The ingester pod holds the Lease and logs what it ingests.
        let ingester = component_pods(&pods, ingester::COMPONENT).await?;
        let ingester_name = ingester[0].name_any();
        let lease = Api::<Lease>::namespaced(client.clone(), ns)
            .get(&format!("{}-ingester", demo.resource))
            .await?;
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        assert_eq!(holder, ingester_name);
        let log = pods.logs(&ingester_name, &LogParams::default()).await?;
        assert!(log.contains("ingested height="), "{log}");

        let followers = component_pods(&pods, followers::COMPONENT).await?;
        assert_eq!(followers.len(), 3);
        assert!(followers.iter().all(pod_ready));

        // Through the Service, the same answers as the leader's.
        let leader = PortForward::start(ns, &format!("service/{}", demo.leader_service), &[1234])?;
        let leader_rpc = format!("http://127.0.0.1:{}/rpc/v1", leader.local_ports[0]);
        let head = rpc(&demo.rpc, "Filecoin.ChainHead", json!([]))?["result"].clone();
        let height = head["Height"].as_i64().unwrap_or_default();
        let key = head["Cids"].clone();
        for (method, params) in [
            ("Filecoin.ChainGetTipSetByHeight", json!([height - 1, key])),
            ("Filecoin.ChainGetTipSet", json!([key])),
            ("Filecoin.StateGetActor", json!(["t01000", key])),
            ("Filecoin.StateGetActor", json!(["t099", key])),
        ] {
            let ours = rpc(&demo.rpc, method, params.clone())?;
            let theirs = rpc(&leader_rpc, method, params.clone())?;
            assert!(ours.get("error").is_none(), "{method}: {ours}");
            assert_eq!(ours["result"], theirs["result"], "{method} {params}");
        }
        println!("ChainGetTipSetByHeight, ChainGetTipSet, StateGetActor at {height}: identical to the leader's");

        // ChainNotify over a websocket through the Service: new heads arrive.
        let heights = chain_notify_heights(&demo.rpc.replace("http://", "ws://"), 2).await?;
        println!("ChainNotify through the Service: heights {heights:?}");
        assert!(heights.windows(2).all(|w| w[1] > w[0]), "{heights:?}");

        // Every follower that took traffic counted it.
        let mut counted = 0;
        for pod in &followers {
            let forward = PortForward::start(ns, &format!("pod/{}", pod.name_any()), &[9091])?;
            let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", forward.local_ports[0])])?;
            let total = metric_sum(&metrics, "lotus_follower_rpc_requests_total");
            println!("{}: lotus_follower_rpc_requests_total {total}", pod.name_any());
            if total > 0.0 {
                counted += 1;
            }
        }
        assert!(counted >= 1, "no follower counted a request");

        // The operator's events.
        let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
        let applied = events.items.iter().filter(|e| e.reason.as_deref() == Some("Applied")).count();
        assert!(applied > 0, "no Applied events");

        replaced_follower_is_ready_within_seconds(&pods, &followers[0]).await?;
        image_roll_loses_no_request(&client, &demo).await?;

        // Deleting the resource removes every child.
        fleets.delete(&demo.resource, &DeleteParams::foreground()).await?;
        wait_until("every child pod of the fleet gone", SETTLE, || async {
            let left = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", demo.resource)))
                .await?;
            Ok(Check::when(left.items.is_empty(), (), format!("{} pods", left.items.len())))
        })
        .await?;
        let services = Api::<Service>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", demo.resource)))
            .await?;
        assert!(services.items.is_empty());
        Ok(())
    })
    .await
}

async fn replaced_follower_is_ready_within_seconds(
    pods: &Api<Pod>,
    victim: &Pod,
) -> anyhow::Result<()> {
    let deleted = Instant::now();
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await?;
    let replacement = wait_until("a replacement follower Ready", SETTLE, || async {
        let ready = component_pods(pods, followers::COMPONENT)
            .await?
            .into_iter()
            .filter(|p| p.name_any() != victim.name_any() && pod_ready(p))
            .collect::<Vec<_>>();
        let newest = ready
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
            .cloned();
        Ok(match newest {
            Some(pod) if ready.len() == 3 => Check::Done(pod),
            _ => Check::Pending(format!("{} ready", ready.len())),
        })
    })
    .await?;
    let created = replacement.metadata.creation_timestamp.clone().map(|t| t.0);
    let ready_at = replacement
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.clone())
        .map(|t| t.0);
    if let (Some(created), Some(ready_at)) = (created, ready_at) {
        let seconds = ready_at.duration_since(created).as_secs_f64();
        println!(
            "deleted follower replaced: pod created → Ready in {seconds:.0}s (≈{:.1}s after the delete)",
            deleted.elapsed().as_secs_f64()
        );
        assert!(seconds <= 30.0, "{seconds}s from creation to Ready");
    }
    Ok(())
}

/// A client inside the node's network namespace polls the ClusterIP Service at
/// 20 requests/s (kube-proxy spreads them over the followers) while the images
/// change: the ingester rolls first, then the followers, and no request fails.
async fn image_roll_loses_no_request(client: &kube::Client, demo: &Demo) -> anyhow::Result<()> {
    let ns = demo.namespace.as_str();
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{}-rpc", demo.resource))
        .await?;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    let netns = std::env::var("LOTUS_FOLLOWER_TESTBED_NETNS")?;
    let next = std::env::var("LOTUS_FOLLOWER_TESTBED_NEXT_IMAGE")?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"Filecoin.ChainHead","params":[]}"#;
    // 60 s of requests, one every 50 ms; prints one HTTP status per request.
    let script = format!(
        "for i in $(seq 1200); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 2 \
         -H 'Content-Type: application/json' -d '{body}' http://{cluster_ip}:1234/rpc/v1; sleep 0.05; done"
    );
    let poller = Command::new("ip")
        .args(["netns", "exec", &netns, "bash", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()?;

    let fleets = Api::<LotusFollowerCluster>::namespaced(client.clone(), ns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let patch = json!({"spec": {"ingester": {"image": next}, "followers": {"image": next}}});
    fleets
        .patch(
            &demo.resource,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns);
    // (ingester on the next image, followers on the next image), each change once.
    let order = std::cell::RefCell::new(Vec::new());
    let (deployments, order_ref, next_ref) = (&deployments, &order, &next);
    wait_until(
        "both Deployments rolled to the next image",
        SETTLE,
        || async move {
            let (order, next) = (order_ref, next_ref);
            let image_of = |d: &k8s_openapi::api::apps::v1::Deployment| {
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default()
            };
            let ingester = deployments
                .get(&format!("{}-ingester", demo.resource))
                .await?;
            let followers = deployments
                .get(&format!("{}-followers", demo.resource))
                .await?;
            let seen = (image_of(&ingester) == *next, image_of(&followers) == *next);
            if order.borrow().last() != Some(&seen) {
                order.borrow_mut().push(seen);
            }
            let done = seen == (true, true)
                && followers.status.as_ref().and_then(|s| s.updated_replicas) == Some(3)
                && followers.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
                && followers.status.as_ref().and_then(|s| s.replicas) == Some(3);
            Ok(Check::when(done, (), format!("{seen:?}")))
        },
    )
    .await?;
    let order = order.into_inner();
    println!("image roll order (ingester, followers): {order:?}");
    assert!(
        !order.contains(&(false, true)),
        "followers before the ingester: {order:?}"
    );

    let output = tokio::task::spawn_blocking(move || poller.wait_with_output()).await??;
    let codes = String::from_utf8_lossy(&output.stdout);
    let total = codes.lines().count();
    let failed: Vec<&str> = codes.lines().filter(|code| *code != "200").collect();
    println!(
        "requests during the roll: {total}, failed: {}",
        failed.len()
    );
    assert!(total >= 1000, "{total} requests");
    assert!(failed.is_empty(), "failed: {failed:?}");
    Ok(())
}

async fn component_pods(pods: &Api<Pod>, component: &str) -> anyhow::Result<Vec<Pod>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        // Not `sum()`: an empty f64 sum is -0.
        .fold(0.0, |total, value| total + value)
}

/// Subscribes to ChainNotify and returns the heights of the first `applies` apply batches.
async fn chain_notify_heights(url: &str, applies: usize) -> anyhow::Result<Vec<i64>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let request =
        json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify", "params": []});
    socket.send(Message::text(request.to_string())).await?;
    let mut heights = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while heights.len() < applies && Instant::now() < deadline {
        let Some(message) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await?
        else {
            break;
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let value: Value = serde_json::from_str(&text)?;
        if value["method"] != "xrpc.ch.val" {
            continue;
        }
        for change in value["params"][1].as_array().cloned().unwrap_or_default() {
            if change["Type"] == "apply" {
                heights.push(change["Val"]["Height"].as_i64().unwrap_or_default());
            }
        }
    }
    anyhow::ensure!(heights.len() >= applies, "only {heights:?} within 60 s");
    Ok(heights)
}
