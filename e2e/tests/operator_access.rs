//! The operator's access, as a platform team reviews it: it runs as its
//! ServiceAccount with the shipped RBAC (`TestOperator`), and the audit log
//! shows every request it made. Every granted verb is used, none is refused;
//! it reads only from its caches (an ingester's Lease renewals cost no read);
//! it may not touch what is not its own (a Lease in kube-system, a Pod); each
//! fleet gets its NetworkPolicies (the bridge CNI here does not enforce them:
//! the objects are checked, not the traffic); and with CPU autoscaling only the
//! HPA moves the followers' replicas.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use lotus_follower_e2e::{
    Check, OPERATOR, TestBed, TestNamespace, TestOperator, install_crds, publish_head,
    shipped_rbac, wait_for_phase, wait_until,
};
use lotus_follower_operator::{
    crd::LotusFollowerCluster,
    reconcile::{apply::FIELD_MANAGER, rollout::HANDOVER_FIELD_MANAGER},
};
use serde_json::{Value, json};

const RESYNC: Duration = Duration::from_secs(2);

fn fleet(name: &str, followers: Value) -> anyhow::Result<LotusFollowerCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "lotus-follower.io/v1alpha1",
        "kind": "LotusFollowerCluster",
        "metadata": {"name": name},
        "spec": {
            "network": "calibnet",
            "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_calibnet"}},
            "leader": {"external": {"url": "http://lotus.lotus.svc:1234/rpc/v1"}},
            "followers": followers,
        },
    }))?)
}

/// Every `(resource[/subresource], verb)` the shipped ClusterRole and election
/// Role grant the operator (`bind` is not a request of its own: see below).
fn granted() -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut granted = BTreeSet::new();
    for document in shipped_rbac()? {
        let name = document["metadata"]["name"].as_str().unwrap_or_default();
        if !matches!(document["kind"].as_str(), Some("ClusterRole" | "Role"))
            || !name.starts_with(OPERATOR)
        {
            continue;
        }
        for rule in document["rules"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    let (resource, verb) = (resource.as_str(), verb.as_str());
                    if let (Some(resource), Some(verb)) = (resource, verb) {
                        granted.insert((resource.to_owned(), verb.to_owned()));
                    }
                }
            }
        }
    }
    Ok(granted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_granted_verb_is_used_none_refused_and_renewals_cost_no_read() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.kube_client().await?;
        install_crds(&admin).await?;
        let ns = TestNamespace::create(&admin, "access").await?;
        let offset = bed.audit_offset()?;
        let operator = TestOperator::start(&bed, &admin, &ns, "operator-a", RESYNC).await?;
        let clusters = ns.api::<LotusFollowerCluster>();
        let spec = fleet("access", json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 3, "targetRequestsPerSecond": "100"}}))?;
        clusters.create(&PostParams::default(), &spec).await?;
        wait_for_phase(&clusters, "access", "Syncing", "2/2").await?;

        // Its NetworkPolicies: RPC open, metrics only from the operator's namespace.
        let policies = ns.api::<NetworkPolicy>();
        let followers = policies.get("access-followers").await?.spec.unwrap_or_default();
        let ingress = followers.ingress.unwrap_or_default();
        assert_eq!(ingress.len(), 2, "{ingress:?}");
        assert_eq!(ingress[0].from, None, "RPC from any client");
        let metrics_from = serde_json::to_value(&ingress[1].from)?;
        assert_eq!(metrics_from[0]["namespaceSelector"]["matchExpressions"][0]["values"], json!([ns.name]));
        let ingester = policies.get("access-ingester").await?.spec.unwrap_or_default();
        assert_eq!(ingester.policy_types, Some(vec!["Ingress".into(), "Egress".into()]));
        println!("NetworkPolicies access-followers and access-ingester in place (objects only: the bridge CNI does not enforce them)");

        // The ingester publishes once, then only renews: the operator reads nothing.
        let ingester_client = bed.service_account_client(&ns, "access-ingester").await?;
        publish_head(&ingester_client, &ns, "access-ingester", 10).await?;
        wait_for_phase(&clusters, "access", "Running", "2/2").await?;
        let renewals_from = bed.audit_offset()?;
        let leases = Api::<Lease>::namespaced(ingester_client, &ns.name);
        for _ in 0..8 {
            let renew = json!({"spec": {"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
            leases.patch("access-ingester", &PatchParams::default(), &Patch::Merge(&renew)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Per-object reads (GETs) would be the reconcile reading; LISTs are the
        // caches' own (re)lists. A watch ends whenever the API server reloads a
        // CRD (tests re-install it), so the resource's own relist may appear;
        // none may come for the Leases.
        let reads: Vec<_> = bed
            .audited_since(renewals_from)?
            .into_iter()
            .filter(|r| r.user == operator.user && matches!(r.verb.as_str(), "get" | "list"))
            // kube-lease-manager reads the operator's own election Lease.
            .filter(|r| !(r.resource == "leases" && r.name.as_deref() == Some(OPERATOR)))
            .collect();
        let (relists, caused): (Vec<_>, Vec<_>) =
            reads.into_iter().partition(|r| r.verb == "list" && r.resource != "leases");
        println!(
            "8 Lease renewals over 8 s: {} reads by the operator ({} relists of other kinds' caches)",
            caused.len(),
            relists.len()
        );
        assert!(caused.is_empty(), "the operator read: {caused:?}");

        // Kinds that come and go: autoscaling and the policies switched off are pruned.
        let patch = json!({"spec": {"followers": {"autoscaling": null, "replicas": 2}, "networkPolicy": {"enabled": false}}});
        clusters.patch("access", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let hpas = ns.api::<HorizontalPodAutoscaler>();
        wait_until("the HPA and the policies to be pruned", Duration::from_secs(30), || async {
            let left = hpas.list_metadata(&Default::default()).await?.items.len()
                + policies.list_metadata(&Default::default()).await?.items.len();
            Ok(Check::when(left == 0, (), format!("{left} left")))
        })
        .await?;
        // A child deleted twice: its Event becomes a series (the Event is patched).
        let services = ns.api::<Service>();
        for _ in 0..2 {
            services.delete("access-rpc", &DeleteParams::default()).await?;
            wait_until("the Service to come back", Duration::from_secs(30), || async {
                let back = services.get_opt("access-rpc").await?.is_some_and(|s| s.metadata.deletion_timestamp.is_none());
                Ok(Check::when(back, (), "absent"))
            })
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let user = operator.user.clone();
        operator.stop().await?;

        let requests: Vec<_> = bed.audited_since(offset)?.into_iter().filter(|r| r.user == user).collect();
        let refused: Vec<_> = requests.iter().filter(|r| r.code == 403).collect();
        assert!(refused.is_empty(), "refused: {refused:?}");
        let mut used: BTreeMap<(String, String), usize> = BTreeMap::new();
        for request in &requests {
            let resource = match &request.subresource {
                Some(sub) => format!("{}/{sub}", request.resource),
                None => request.resource.clone(),
            };
            // Server-side apply of a new object is authorized as a create too.
            if request.verb == "patch" && request.code == 201 {
                *used.entry((resource.clone(), "create".into())).or_default() += 1;
            }
            *used.entry((resource, request.verb.clone())).or_default() += 1;
        }
        println!("{} requests by the operator, none refused; by resource and verb:", requests.len());
        for ((resource, verb), count) in &used {
            println!("  {resource:<32} {verb:<8} {count}");
        }
        let unused: Vec<_> = granted()?
            .into_iter()
            .filter(|(resource, verb)| verb != "bind" && !used.contains_key(&(resource.clone(), verb.clone())))
            .collect();
        assert!(unused.is_empty(), "granted but never used: {unused:?}");
        ns.delete().await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_reconciles_the_namespaces_it_watches_and_no_other() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.kube_client().await?;
        install_crds(&admin).await?;
        let home = TestNamespace::create(&admin, "watch-home").await?;
        let (a, b, other) = (
            TestNamespace::create(&admin, "watch-a").await?,
            TestNamespace::create(&admin, "watch-b").await?,
            TestNamespace::create(&admin, "watch-other").await?,
        );
        for ns in [&a, &b, &other] {
            ns.api::<LotusFollowerCluster>()
                .create(
                    &PostParams::default(),
                    &fleet("fleet", json!({"replicas": 1}))?,
                )
                .await?;
        }
        let operator =
            TestOperator::start_watching(&bed, &admin, &home, "operator-a", RESYNC, &[&a, &b])
                .await?;
        for ns in [&a, &b] {
            wait_for_phase(&ns.api::<LotusFollowerCluster>(), "fleet", "Syncing", "1/1").await?;
        }
        // By now a third namespace's fleet would have its children too.
        let untouched = other.api::<LotusFollowerCluster>().get("fleet").await?;
        assert_eq!(
            untouched.status, None,
            "a namespace not watched was reconciled"
        );
        let children = other
            .api::<Deployment>()
            .list_metadata(&Default::default())
            .await?
            .items
            .len();
        assert_eq!(children, 0);
        println!(
            "watching {} and {}: both fleets Syncing; {} untouched",
            a.name, b.name, other.name
        );
        operator.stop().await?;
        for ns in [a, b, other, home] {
            ns.delete().await?;
        }
        Ok(())
    })
    .await
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
fn can_i(bed: &TestBed, user: &str, args: &[&str]) -> anyhow::Result<bool> {
    let output = Command::new("kubectl")
        .args(["auth", "can-i", "--as", user])
        .args(args)
        .env("KUBECONFIG", &bed.kubeconfig)
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "yes")
}

#[tokio::test]
async fn the_operator_is_refused_what_is_not_its_own() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.kube_client().await?;
        install_crds(&admin).await?;
        let ns = TestNamespace::create(&admin, "refused").await?;
        let operator = TestOperator::start(&bed, &admin, &ns, "operator-a", RESYNC).await?;
        let client = bed.service_account_client(&ns, OPERATOR).await?;

        // A patch of kube-system's Leases (the control plane's elections) is refused.
        let patch = json!({"metadata": {"annotations": {"example.com/taken": "yes"}}});
        let patched = Api::<Lease>::namespaced(client.clone(), "kube-system")
            .patch(
                "kube-controller-manager",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        assert!(
            matches!(patched, Err(kube::Error::Api(ref s)) if s.code == 403),
            "{patched:?}"
        );
        // So is a Pod of its own making.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "not-mine"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))?;
        let created = Api::<Pod>::namespaced(client, &ns.name)
            .create(&PostParams::default(), &pod)
            .await;
        assert!(
            matches!(created, Err(kube::Error::Api(ref s)) if s.code == 403),
            "{created:?}"
        );

        let user = &operator.user;
        let checks = [
            (vec!["patch", "leases", "-n", "kube-system"], false),
            (
                vec!["update", "leases/demo-ingester", "-n", &ns.name],
                false,
            ),
            (vec!["delete", "leases", "-n", &ns.name], false),
            (
                vec!["patch", "leases/lotus-follower-operator", "-n", &ns.name],
                true,
            ),
            (vec!["create", "leases", "-n", &ns.name], true),
            (vec!["bind", "clusterroles/lotus-follower-ingester"], true),
            (vec!["bind", "clusterroles/admin"], false),
            (vec!["escalate", "roles", "-n", &ns.name], false),
            (vec!["delete", "deployments", "-n", &ns.name], false),
            (
                vec!["delete", "horizontalpodautoscalers", "-n", &ns.name],
                true,
            ),
            (vec!["get", "secrets", "-n", &ns.name], false),
        ];
        for (args, expected) in checks {
            let allowed = can_i(&bed, user, &args)?;
            println!(
                "can-i {}: {}",
                args.join(" "),
                if allowed { "yes" } else { "no" }
            );
            assert_eq!(allowed, expected, "can-i {args:?}");
        }
        operator.stop().await?;
        ns.delete().await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_hpa_moves_replicas_while_it_scales_on_cpu() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.kube_client().await?;
        install_crds(&admin).await?;
        let ns = TestNamespace::create(&admin, "hpa-cpu").await?;
        let operator = TestOperator::start(&bed, &admin, &ns, "operator-a", RESYNC).await?;
        let busy = |usage: &str| {
            json!({
                "resources": {"requests": {"cpu": "100m"}},
                // kwok's emulated usage: 200m of a 100m request is 200% against a 50% target.
                "podAnnotations": {"kwok.x-k8s.io/usage-cpu": usage},
                "nodeSelector": {"type": "kwok"},
                "autoscaling": {
                    "minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50,
                    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}, "scaleDown": {"stabilizationWindowSeconds": 0}},
                },
            })
        };
        let clusters = ns.api::<LotusFollowerCluster>();
        clusters.create(&PostParams::default(), &fleet("cpu", busy("200m"))?).await?;

        // Every change of spec.replicas, with the manager owning the field then.
        let deployments = ns.api::<Deployment>();
        let changes: Arc<Mutex<Vec<(i32, String)>>> = Arc::default();
        let recorder = {
            let changes = changes.clone();
            let config = watcher::Config::default().fields("metadata.name=cpu-followers");
            let stream = watcher(deployments.clone(), config).applied_objects();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(deployment)) = stream.next().await {
                    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    let owner = replicas_owner(&deployment);
                    if let Ok(mut changes) = changes.lock()
                        && changes.last().map(|(r, _)| *r) != Some(replicas)
                    {
                        changes.push((replicas, owner));
                    }
                }
            })
        };
        let replicas = |want: i32| {
            let deployments = deployments.clone();
            async move {
                wait_until(&format!("{want} followers"), Duration::from_secs(120), || async {
                    let replicas = deployments.get("cpu-followers").await?.spec.and_then(|s| s.replicas).unwrap_or(0);
                    Ok(Check::when(replicas == want, (), format!("{replicas}")))
                })
                .await
            }
        };
        let started = std::time::Instant::now();
        replicas(4).await?;
        println!("scaled up 2 → 4 on emulated CPU in {:.1}s", started.elapsed().as_secs_f64());
        // Usage drops to 10m: the new template rolls out, the HPA scales back.
        let patch = json!({"spec": {"followers": busy("10m")}});
        clusters.patch("cpu", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let started = std::time::Instant::now();
        replicas(2).await?;
        println!("scaled down 4 → 2 in {:.1}s", started.elapsed().as_secs_f64());
        recorder.abort();
        let changes = changes.lock().map(|c| c.clone()).unwrap_or_default();
        println!("spec.replicas changes (value, owner): {changes:?}");
        // The first value is the operator's (it creates the Deployment); every
        // change after it is the HPA's, through the scale subresource.
        let (first, later) = changes.split_first().ok_or_else(|| anyhow::anyhow!("no replicas seen"))?;
        assert_eq!(first.0, 2, "created with minReplicas");
        assert!(later.len() >= 2, "up and down: {changes:?}");
        for (value, owner) in later {
            assert!(
                owner != FIELD_MANAGER && owner != HANDOVER_FIELD_MANAGER && owner.ends_with("/scale"),
                "replicas {value} set by {owner}, not the HPA"
            );
        }
        operator.stop().await?;
        ns.delete().await
    })
    .await
}

/// The manager (and subresource) whose managed fields hold `spec.replicas`.
fn replicas_owner(deployment: &Deployment) -> String {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
        .map(|entry| {
            let manager = entry.manager.clone().unwrap_or_default();
            match &entry.subresource {
                Some(sub) if !sub.is_empty() => format!("{manager}/{sub}"),
                _ => manager,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
