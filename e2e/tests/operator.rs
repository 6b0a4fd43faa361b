//! The operator on the real API server, running as its own ServiceAccount with
//! the shipped RBAC (`TestOperator`), limited to the test's namespace: fleets
//! reach Ready (kwok makes the pods Ready), conditions follow the ingester's
//! Lease, spec changes converge, drift is repaired, a no-op resync writes
//! nothing (counted in the audit log), deletion removes everything.

use std::{collections::BTreeMap, process::Command, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, coordination::v1::Lease,
    core::v1::Service, events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use lotus_follower_e2e::{
    Check, OPERATOR, TestBed, TestNamespace, TestOperator, condition, install_crds, publish_head,
    wait_for_phase, wait_until,
};
use lotus_follower_operator::{
    build::monitoring::service_monitor_resource,
    crd::LotusFollowerCluster,
    reconcile::{
        apply::FIELD_MANAGER,
        rollout::{HANDOVER_FIELD_MANAGER, owns_replicas},
    },
};
use serde_json::{Value, json};

/// Short, so the zero-write check sees several resyncs in seconds.
const RESYNC: Duration = Duration::from_secs(2);

fn kubectl(bed: &TestBed, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &bed.kubeconfig)
        .output()
        .map_err(|error| {
            anyhow::anyhow!("running kubectl (is the test bed's PATH set?): {error}")
        })?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_resource_becomes_a_running_fleet() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, "operator").await?;
        let operator = TestOperator::start(&bed, &client, &ns, "operator-a", RESYNC).await?;

        let minimal = json!({
            "apiVersion": "lotus-follower.io/v1alpha1",
            "kind": "LotusFollowerCluster",
            "metadata": {"name": "demo"},
            "spec": {
                "network": "calibnet",
                "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_calibnet"}},
                "leader": {"external": {"url": "http://lotus.lotus.svc:1234/rpc/v1"}},
                "followers": {"replicas": 2},
            },
        });
        let clusters = ns.api::<LotusFollowerCluster>();
        clusters.create(&PostParams::default(), &serde_json::from_value(minimal)?).await?;

        // Workloads available, no ingester process holding the Lease yet: Syncing.
        let status = wait_for_phase(&clusters, "demo", "Syncing", "2/2").await?;
        println!("LotusFollowerCluster demo: phase {:?}, followers {:?}, endpoint {:?}", status.phase, status.followers, status.endpoint);
        assert_eq!(condition(&status, "Ready"), Some(("True".into(), "Available".into())));
        assert_eq!(condition(&status, "HeadInSync"), Some(("Unknown".into(), "NoIngester".into())));
        assert_eq!(status.endpoint.as_deref(), Some(format!("http://demo-rpc.{}.svc:1234/rpc/v1", ns.name).as_str()));

        // The Lease is watched: the ingester's report alone moves the status.
        let ingester = bed.service_account_client(&ns, "demo-ingester").await?;
        publish_head(&ingester, &ns, "demo-ingester", 1234).await?;
        let status = wait_for_phase(&clusters, "demo", "Running", "2/2").await?;
        assert_eq!(condition(&status, "HeadInSync"), Some(("True".into(), "HeadRecent".into())));
        assert_eq!(condition(&status, "LeaderReady"), Some(("True".into(), "LeaderSynced".into())));
        assert_eq!(condition(&status, "DatabaseReady"), Some(("True".into(), "StoreReachable".into())));
        assert_eq!(status.head_height, Some(1234));
        println!("with the ingester's Lease: phase {:?}, head {:?}", status.phase, status.head_height);
        // The ingester's binding reaches the Leases of its namespace only (the
        // shipped ClusterRole, bound there): none of another, none to delete.
        let elsewhere = Api::<Lease>::namespaced(ingester.clone(), "kube-system").get("kube-scheduler").await;
        assert!(matches!(elsewhere, Err(kube::Error::Api(ref status)) if status.code == 403), "{elsewhere:?}");
        let deleted = Api::<Lease>::namespaced(ingester, &ns.name).delete("demo-ingester", &DeleteParams::default()).await;
        assert!(matches!(deleted, Err(kube::Error::Api(ref status)) if status.code == 403), "{deleted:?}");

        // What users see: the printer columns and the schema's documentation.
        let table = kubectl(&bed, &["get", "lfc", "--namespace", &ns.name])?;
        println!("kubectl get lfc:\n{table}");
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["NAME", "PHASE", "FOLLOWERS", "HEAD", "AGE"]);
        let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(row[..4], ["demo", "Running", "2/2", "1234"]);
        let explained = kubectl(&bed, &["explain", "lfc.spec.followers"])?;
        for documented in ["autoscaling", "Scale the followers on their RPC load", "replicas", "forward"] {
            assert!(explained.contains(documented), "kubectl explain lacks {documented:?}:\n{explained}");
        }

        // A no-op resync writes nothing: no apply, no status, no Event. Only the
        // renewals of the operator's own election Lease may appear.
        tokio::time::sleep(RESYNC * 2).await;
        let offset = bed.audit_offset()?;
        let reconciles = operator.metric("lotus_follower_operator_reconciles_total").await?;
        tokio::time::sleep(RESYNC * 4).await;
        let resynced = operator.metric("lotus_follower_operator_reconciles_total").await? - reconciles;
        let writes: Vec<_> = bed
            .audited_writes_since(offset)?
            .into_iter()
            .filter(|write| write.user == operator.user)
            .collect();
        let (election, others): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .partition(|write| write.resource == "leases" && write.name.as_deref() == Some(OPERATOR));
        println!("no-op resyncs: {resynced} reconciles, {} writes ({} election-Lease renewals)", others.len(), election.len());
        assert!(resynced >= 3.0, "the controller resynced ({resynced} reconciles)");
        assert!(others.is_empty(), "a no-op resync wrote: {others:?}");

        // A deleted child comes back, and the operator says so in an Event.
        ns.api::<Service>().delete("demo-rpc", &DeleteParams::default()).await?;
        let services: Api<Service> = ns.api();
        wait_until("the deleted Service to come back", Duration::from_secs(30), || async {
            let service = services.get_opt("demo-rpc").await?;
            let back = service.is_some_and(|s| s.metadata.deletion_timestamp.is_none());
            Ok(Check::when(back, (), "absent"))
        })
        .await?;
        // Its Event, related to the Service, is a series: applied at creation and again now.
        let events: Api<Event> = ns.api();
        let applied = wait_until("an Event for the recreated Service", Duration::from_secs(30), || async {
            let event = events.list(&ListParams::default()).await?.items.into_iter().find(|event| {
                event.reason.as_deref() == Some("Applied")
                    && event.related.as_ref().and_then(|r| r.name.as_deref()) == Some("demo-rpc")
            });
            let count = event.as_ref().and_then(|e| e.series.as_ref()).map_or(1, |s| s.count);
            let note = event.and_then(|e| e.note).unwrap_or_default();
            Ok(Check::when(count >= 2, format!("{note} ×{count}"), format!("{note:?} ×{count}")))
        })
        .await?;
        println!("a deleted child Service was recreated; Events: {applied:?}");

        // Its health and metrics: ready, and every write counted.
        let ready = operator.get("/readyz").await?;
        assert!(ready.lines().next().is_some_and(|status| status.contains(" 200 ")), "{ready}");
        let writes = operator.metric("lotus_follower_operator_writes_total").await?;
        assert!(writes >= 9.0, "{writes} writes counted");
        assert_eq!(operator.metric("lotus_follower_operator_leader").await?, 1.0);

        // A standby waits on the election Lease and takes over when the leader
        // stops (releasing the Lease on its way out).
        let standby = TestOperator::start(&bed, &client, &ns, "operator-b", RESYNC).await?;
        tokio::time::sleep(RESYNC * 2).await;
        assert_eq!(standby.metric("lotus_follower_operator_leader").await?, 0.0);
        assert_eq!(standby.metric("lotus_follower_operator_reconciles_total").await?, 0.0);
        operator.stop().await?;
        let took_over = std::time::Instant::now();
        wait_until("the standby to lead and reconcile", Duration::from_secs(45), || async {
            let reconciles = standby.metric("lotus_follower_operator_reconciles_total").await?;
            Ok(Check::when(reconciles > 0.0, (), format!("{reconciles} reconciles")))
        })
        .await?;
        println!("the standby took over in {:?}", took_over.elapsed());

        // Deleting the resource removes every child (owner references).
        clusters.delete("demo", &DeleteParams::foreground()).await?;
        let deployments: Api<Deployment> = ns.api();
        wait_until("the children to be deleted", Duration::from_secs(60), || async {
            let left: Vec<String> = deployments
                .list_metadata(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
                .await?
                .items
                .into_iter()
                .filter_map(|d| d.metadata.name)
                .chain(
                    services
                        .list_metadata(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
                        .await?
                        .items
                        .into_iter()
                        .filter_map(|s| s.metadata.name),
                )
                .collect();
            Ok(Check::when(left.is_empty(), (), format!("{left:?}")))
        })
        .await?;
        standby.stop().await?;
        ns.delete().await
    })
    .await
}

/// Images of the ingester's and the followers' pod templates.
async fn images(deployments: &Api<Deployment>, name: &str) -> anyhow::Result<(String, String)> {
    let image = |deployment: Deployment| {
        deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .and_then(|pod| pod.containers.into_iter().next())
            .and_then(|container| container.image)
            .unwrap_or_default()
    };
    Ok((
        image(deployments.get(&format!("{name}-ingester")).await?),
        image(deployments.get(&format!("{name}-followers")).await?),
    ))
}

/// Samples the followers' replicas until `done` holds; returns the lowest seen.
async fn lowest_replicas_until(
    deployments: &Api<Deployment>,
    name: &str,
    what: &str,
    done: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<i32> {
    let mut lowest = i32::MAX;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let deployment = deployments.get(name).await?;
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        lowest = lowest.min(replicas);
        if done(&deployment) {
            return Ok(lowest);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} (replicas {replicas})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_converge() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, "converge").await?;
        let operator = TestOperator::start(&bed, &client, &ns, "operator-a", RESYNC).await?;
        let example: Value = serde_yaml::from_str(include_str!("../../manifests/examples/external.yaml"))?;
        let clusters = ns.api::<LotusFollowerCluster>();
        clusters.create(&PostParams::default(), &serde_json::from_value(example)?).await?;
        let status = wait_for_phase(&clusters, "fleet", "Syncing", "2/2").await?;
        assert_eq!(condition(&status, "Ready"), Some(("True".into(), "Available".into())));
        println!("manifests/examples/external.yaml: phase {:?}, followers {:?}", status.phase, status.followers);

        // The HPA took over: the operator's own apply no longer sets replicas;
        // the hand-over manager pinned them.
        let deployments: Api<Deployment> = ns.api();
        let hpas: Api<HorizontalPodAutoscaler> = ns.api();
        let followers = deployments.get("fleet-followers").await?;
        assert!(!owns_replicas(&followers, FIELD_MANAGER), "the operator let go of replicas");
        assert!(owns_replicas(&followers, HANDOVER_FIELD_MANAGER), "the hand-over manager holds them");
        assert!(hpas.get_opt("fleet-followers").await?.is_some());

        // An image change: the ingester rolls out first, the followers after it.
        let (old, _) = images(&deployments, "fleet").await?;
        let new = "ghcr.io/lotus-follower/lotus-follower:next";
        let patch = json!({"spec": {"ingester": {"image": new}, "followers": {"image": new}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = images(&deployments, "fleet").await?;
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == (new.to_owned(), new.to_owned()) {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the image change did not converge: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("image states (ingester, followers): {seen:?}");
        assert!(!seen.contains(&(old.clone(), new.to_owned())), "followers moved before the ingester: {seen:?}");
        assert!(seen.contains(&(new.to_owned(), old.clone())), "the followers waited for the ingester: {seen:?}");

        // A field taken out of the spec is taken off the child.
        let annotation = "service.beta.kubernetes.io/aws-load-balancer-type";
        let services: Api<Service> = ns.api();
        let annotated = |service: &Service| service.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(annotation));
        assert!(annotated(&services.get("fleet-rpc").await?));
        let unannotated = json!({"spec": {"followers": {"service": {"annotations": null}}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&unannotated)).await?;
        wait_until("the annotation to leave the Service", Duration::from_secs(30), || async {
            Ok(Check::when(!annotated(&services.get("fleet-rpc").await?), (), "still annotated"))
        })
        .await?;

        // And one taken out of a container (a list item) leaves the container.
        let resources = |deployment: Deployment| {
            deployment
                .spec
                .and_then(|spec| spec.template.spec)
                .and_then(|pod| pod.containers.into_iter().next())
                .and_then(|container| container.resources)
                .and_then(|resources| resources.requests)
        };
        assert!(resources(deployments.get("fleet-ingester").await?).is_some());
        let unlimited = json!({"spec": {"ingester": {"resources": null}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&unlimited)).await?;
        wait_until("the ingester's resources to be removed", Duration::from_secs(30), || async {
            let left = resources(deployments.get("fleet-ingester").await?);
            Ok(Check::when(left.is_none(), (), format!("{left:?}")))
        })
        .await?;

        // Autoscaling off: the HPA is removed and the replicas are set explicitly.
        let off = json!({"spec": {"followers": {"autoscaling": null, "replicas": 3}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&off)).await?;
        let lowest = lowest_replicas_until(&deployments, "fleet-followers", "3 replicas set by the operator", |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(3) && owns_replicas(d, FIELD_MANAGER)
        })
        .await?;
        assert!(lowest >= 2, "replicas dropped to {lowest} on the way off");
        wait_until("the HPA to be pruned", Duration::from_secs(30), || async {
            Ok(Check::when(hpas.get_opt("fleet-followers").await?.is_none(), (), "present"))
        })
        .await?;
        wait_for_phase(&clusters, "fleet", "Syncing", "3/3").await?;

        // And on again with a higher minimum: never below the running count or the minimum.
        let on = json!({"spec": {"followers": {"autoscaling": {"minReplicas": 4, "maxReplicas": 6, "targetRequestsPerSecond": "100"}}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&on)).await?;
        let lowest = lowest_replicas_until(&deployments, "fleet-followers", "the hand-over to 4 replicas", |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(4) && !owns_replicas(d, FIELD_MANAGER)
        })
        .await?;
        assert!(lowest >= 3, "replicas dropped to {lowest} on the way on");
        wait_until("the HPA to be back", Duration::from_secs(30), || async {
            Ok(Check::when(hpas.get_opt("fleet-followers").await?.is_some(), (), "absent"))
        })
        .await?;
        let status = wait_for_phase(&clusters, "fleet", "Syncing", "4/4").await?;
        let labels: BTreeMap<_, _> = status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect();
        println!("autoscaling off → on: lowest replicas {lowest}; conditions {labels:?}");

        // Paused: nothing changes, the status says so; unpaused, it converges.
        let paused = json!({"spec": {"paused": true, "followers": {"autoscaling": null, "replicas": 5}}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&paused)).await?;
        wait_for_phase(&clusters, "fleet", "Paused", "4/4").await?;
        tokio::time::sleep(RESYNC * 2).await;
        let replicas = deployments.get("fleet-followers").await?.spec.and_then(|s| s.replicas);
        assert_eq!(replicas, Some(4), "paused: the followers were left alone");
        assert!(hpas.get_opt("fleet-followers").await?.is_some(), "paused: the HPA was left alone");
        let resumed = json!({"spec": {"paused": false}});
        clusters.patch("fleet", &PatchParams::default(), &Patch::Merge(&resumed)).await?;
        wait_for_phase(&clusters, "fleet", "Syncing", "5/5").await?;
        assert!(hpas.get_opt("fleet-followers").await?.is_none());

        // Where the Prometheus Operator's ServiceMonitor kind is served, the fleet
        // gets a metrics Service and a ServiceMonitor for it.
        let monitors = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &service_monitor_resource());
        wait_until("the ServiceMonitor", Duration::from_secs(30), || async {
            Ok(Check::when(monitors.get_opt("fleet").await?.is_some(), (), "absent"))
        })
        .await?;
        let metrics = ns.api::<Service>().get("fleet-metrics").await?;
        assert_eq!(metrics.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));

        operator.stop().await?;
        ns.delete().await
    })
    .await
}

/// Fleets that exist when the operator starts (a restart, a failover) are all
/// reconciled, and the operator still stops on request. More fleets than the
/// operator runs reconciles at once: a reconcile that waited for the caches
/// would hold its slot, and with every slot held the controller stops polling
/// the watches that fill them (and a store's readiness wakes only one waiter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_present_at_start_are_all_reconciled() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, "operator-start").await?;
        let clusters = ns.api::<LotusFollowerCluster>();
        let names: Vec<String> = (0..20).map(|i| format!("fleet-{i:02}")).collect();
        for name in &names {
            let fleet = json!({
                "apiVersion": "lotus-follower.io/v1alpha1",
                "kind": "LotusFollowerCluster",
                "metadata": {"name": name},
                "spec": {
                    "network": "calibnet",
                    "database": {"external": {"contactPoints": ["db:9042"], "keyspace": "lotus_calibnet"}},
                    "leader": {"external": {"url": "http://lotus:1234/rpc/v1"}},
                    "followers": {"replicas": 1},
                },
            });
            clusters.create(&PostParams::default(), &serde_json::from_value(fleet)?).await?;
        }
        let operator = TestOperator::start(&bed, &client, &ns, "operator-a", RESYNC).await?;
        for name in &names {
            wait_for_phase(&clusters, name, "Syncing", "1/1").await?;
        }
        println!("all {} fleets present at start reconciled to Syncing", names.len());
        tokio::time::timeout(Duration::from_secs(30), operator.stop()).await??;
        ns.delete().await
    })
    .await
}
