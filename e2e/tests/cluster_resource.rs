//! The `LotusFollowerCluster` CRD on the real API server: the minimal resource is
//! accepted as written, and specs the operator could never reconcile are refused
//! by the schema with messages a user can act on.

use std::time::Duration;

use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::ApiResource,
};
use lotus_follower_e2e::{Check, TestBed, TestNamespace, install_crd, wait_until};
use lotus_follower_operator::crd::LotusFollowerCluster;
use serde_json::{Value, json};

fn minimal(name: &str) -> Value {
    json!({
        "apiVersion": "lotus-follower.io/v1alpha1",
        "kind": "LotusFollowerCluster",
        "metadata": {"name": name},
        "spec": {
            "network": "calibnet",
            "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_calibnet"}},
            "leader": {"external": {"url": "http://lotus.lotus.svc:1234/rpc/v1"}},
            "followers": {"replicas": 2},
        },
    })
}

/// `minimal` with `patch` merged into its spec.
fn with_spec(name: &str, patch: Value) -> Value {
    let mut resource = minimal(name);
    merge(&mut resource["spec"], patch);
    resource
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

#[tokio::test]
async fn the_schema_accepts_the_minimal_resource_and_refuses_bad_specs() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;

        let ns = TestNamespace::create(&client, "lfc-schema").await?;
        let resource = ApiResource::erase::<LotusFollowerCluster>(&());
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &resource);
        let create = |value: Value| {
            let api = api.clone();
            async move { anyhow::Ok(api.create(&PostParams::default(), &serde_json::from_value(value)?).await) }
        };

        create(minimal("demo")).await??;
        let typed = Api::<LotusFollowerCluster>::namespaced(client.clone(), &ns.name).get("demo").await?;
        println!("minimal LotusFollowerCluster accepted: network {:?}, {} followers", typed.spec.network, typed.spec.followers.replicas.unwrap_or_default());

        // Pod placement is accepted and stored whole: a field the schema lacked
        // would be pruned silently and missing here.
        let placement = json!({
            "nodeSelector": {"node-pool": "rpc"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "rpc", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "rpc"}}}},
            ]}},
            "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
        });
        create(with_spec("placed", json!({"ingester": placement.clone(), "followers": placement.clone()}))).await??;
        let placed = Api::<LotusFollowerCluster>::namespaced(client.clone(), &ns.name).get("placed").await?;
        let expected: lotus_follower_operator::crd::PodPlacement = serde_json::from_value(placement)?;
        assert_eq!(placed.spec.ingester.placement, expected);
        assert_eq!(placed.spec.followers.placement, expected);
        println!("pod placement accepted and stored whole for the ingester and the followers");

        let refusals = [
            ("an unknown network", with_spec("bad-network", json!({"network": "no-such-network"})), "Unsupported value"),
            ("negative replicas", with_spec("bad-replicas", json!({"followers": {"replicas": -1}})), "greater than or equal to 0"),
            (
                "min above max",
                with_spec("bad-range", json!({"followers": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetRequestsPerSecond": "100"}}})),
                "minReplicas must not exceed maxReplicas",
            ),
            (
                "a CPU target without a CPU request",
                with_spec("bad-cpu", json!({"followers": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 60}}})),
                "needs followers.resources.requests.cpu",
            ),
            (
                "one Secret for both roles",
                with_spec("bad-credentials", json!({"database": {"external": {
                    "ingesterCredentials": {"secretName": "db"}, "followerCredentials": {"secretName": "db"}}}})),
                "must be a different Secret",
            ),
            ("no database", {
                let mut value = minimal("bad-database");
                value["spec"]["database"] = json!({});
                value
            }, "database.external is required"),
            ("a bad keyspace", with_spec("bad-keyspace", json!({"database": {"external": {"keyspace": "Bad-Name"}}})), "should match"),
            (
                "a pod annotation under the operator's prefix",
                with_spec("bad-annotation", json!({"followers": {"podAnnotations": {"lotus-follower.io/config": "x"}}})),
                "reserved for the operator",
            ),
            (
                "33 tolerations",
                with_spec("bad-tolerations", json!({"ingester": {"tolerations": (0..33).map(|i| json!({"key": format!("t{i}"), "operator": "Exists"})).collect::<Vec<_>>()}})),
                "at most 32",
            ),
            (
                "33 node selector labels",
                with_spec("bad-selector", json!({"followers": {"nodeSelector": (0..33).map(|i| (format!("l{i}"), json!("x"))).collect::<serde_json::Map<_, _>>()}})),
                "at most 32",
            ),
        ];
        for (what, value, expected) in refusals {
            match create(value).await? {
                Err(kube::Error::Api(status)) => {
                    let message = status.message;
                    println!("refused {what}: {message}");
                    assert!(message.contains(expected), "{what}: {message}");
                }
                Err(error) => anyhow::bail!("{what}: {error}"),
                Ok(_) => anyhow::bail!("{what} was accepted"),
            }
        }

        // The network cannot change once set.
        let change = json!({"spec": {"network": "mainnet"}});
        let message = match api.patch("demo", &PatchParams::default(), &Patch::Merge(&change)).await {
            Err(kube::Error::Api(status)) => status.message,
            other => anyhow::bail!("a network change was not refused: {other:?}"),
        };
        println!("refused a network change: {message}");
        assert!(message.contains("network is immutable"), "{message}");
        ns.delete().await
    })
    .await
}

#[tokio::test]
async fn built_children_are_valid_objects_and_their_pods_become_ready() -> anyhow::Result<()> {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        core::v1::{Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::RoleBinding,
    };
    use lotus_follower_operator::build::{
        Environment, autoscaling, disruption, followers, ingester, network, service,
    };

    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;
        let ns = TestNamespace::create(&client, "lfc-children").await?;
        let clusters = Api::<LotusFollowerCluster>::namespaced(client.clone(), &ns.name);
        // Placement that keeps the pods on kwok's nodes, with the empty values a
        // user may write (the server drops them; the built objects must too).
        let placement = json!({
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "rpc", "effect": "NoSchedule"}, {"operator": "Exists", "key": "", "effect": "NoExecute", "tolerationSeconds": 30}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}], "matchFields": []}},
            ]}},
            "podAnnotations": {"example.com/owner": "e2e"},
        });
        let mut followers = placement.clone();
        merge(&mut followers, json!({"resources": {"requests": {"cpu": "100m"}}, "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}}));
        let spec = with_spec("fleet", json!({
            "database": {"external": {"ingesterCredentials": {"secretName": "db-ingester"}, "followerCredentials": {"secretName": "db-follower"}}},
            "ingester": placement,
            "followers": followers,
        }));
        let cluster = clusters.create(&PostParams::default(), &serde_json::from_value(spec)?).await?;

        // Server-side apply of every child, as the reconciler will do it.
        let apply = PatchParams::apply("lotus-follower-operator").force();
        macro_rules! apply {
            ($kind:ty, $object:expr) => {{
                let object: $kind = $object;
                let name = object.metadata.name.clone().unwrap_or_default();
                let api = Api::<$kind>::namespaced(client.clone(), &ns.name);
                api.patch(&name, &apply, &Patch::Apply(&object)).await?;
                // What the server stored (defaults, canonical quantities) still
                // matches what we built: a resync will find nothing to write.
                let live = serde_json::to_value(api.get(&name).await?)?;
                assert!(
                    lotus_follower_operator::reconcile::diff::is_applied(&serde_json::to_value(&object)?, &live),
                    "{} {name} reads back different from what was applied",
                    stringify!($kind)
                );
            }};
        }
        apply!(ServiceAccount, ingester::service_account(&cluster));
        apply!(RoleBinding, ingester::role_binding(&cluster));
        apply!(Lease, ingester::lease(&cluster));
        apply!(Deployment, ingester::deployment(&cluster));
        // The followers' first apply states the replicas; the HPA takes over from there.
        let mut followers_deployment = followers::deployment(&cluster);
        if let Some(spec) = followers_deployment.spec.as_mut() {
            spec.replicas = Some(2);
        }
        apply!(Deployment, followers_deployment);
        apply!(Service, service::rpc_service(&cluster));
        apply!(PodDisruptionBudget, disruption::followers_pdb(&cluster));
        apply!(HorizontalPodAutoscaler, autoscaling::followers_hpa(&cluster).ok_or_else(|| anyhow::anyhow!("no HPA"))?);
        let environment = Environment { operator_namespace: Some("lotus-follower-system".into()), service_monitors: false };
        for policy in network::policies(&cluster, &environment) {
            apply!(NetworkPolicy, policy);
        }

        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
        for (name, want) in [("fleet-followers", 2), ("fleet-ingester", 1)] {
            wait_until(&format!("{want} ready pods of {name}"), Duration::from_secs(60), || async {
                let ready = deployments.get_status(name).await?.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                Ok(Check::when(ready >= want, (), format!("{ready} ready")))
            })
            .await?;
            println!("{name}: {want} pod(s) Ready with the built spec");
        }
        // Children are owned by the resource.
        let owned = deployments.get("fleet-followers").await?.metadata.owner_references.unwrap_or_default();
        assert_eq!(owned[0].uid, cluster.uid().unwrap_or_default());
        ns.delete().await
    })
    .await
}

#[tokio::test]
async fn the_example_manifests_are_accepted() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;
        let ns = TestNamespace::create(&client, "lfc-examples").await?;
        let clusters = Api::<LotusFollowerCluster>::namespaced(client.clone(), &ns.name);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
        let mut accepted = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|ext| ext != "yaml") {
                continue;
            }
            let cluster: LotusFollowerCluster =
                serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
            clusters.create(&PostParams::default(), &cluster).await?;
            println!("{} accepted", path.display());
            accepted += 1;
        }
        assert!(accepted > 0, "no examples under {}", dir.display());
        ns.delete().await
    })
    .await
}

/// `kubectl apply --server-side -f manifests/install.yaml`, as the README says:
/// every object is accepted, and the namespace's `restricted` Pod Security
/// admits the operator's pods (kwok makes them Ready; no operator process runs
/// in them).
#[tokio::test]
async fn the_install_manifests_are_accepted() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;

    let bed = TestBed::from_env()?;
    bed.run(async {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let output = std::process::Command::new("kubectl")
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(root.join("manifests/install.yaml"))
            .env("KUBECONFIG", &bed.kubeconfig)
            .output()?;
        println!("{}", String::from_utf8_lossy(&output.stdout));
        anyhow::ensure!(
            output.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let client = bed.kube_client().await?;
        let deployments = Api::<Deployment>::namespaced(client, "lotus-follower-system");
        wait_until(
            "the operator's pods to be admitted and Ready",
            Duration::from_secs(60),
            || async {
                let status = deployments
                    .get_status("lotus-follower-operator")
                    .await?
                    .status
                    .unwrap_or_default();
                let ready = status.ready_replicas.unwrap_or(0);
                Ok(Check::when(
                    ready == 2,
                    (),
                    format!("{ready}/2 ready; {:?}", status.conditions),
                ))
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// `kubectl explain` describes the placement fields from the CRD's doc
/// comments, down to the fields of Kubernetes' own types.
#[tokio::test]
async fn kubectl_explain_describes_pod_placement() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;
        let explain = |path: &'static str| {
            let kubeconfig = bed.kubeconfig.clone();
            move || {
                let kubeconfig = kubeconfig.clone();
                async move {
                    let output = std::process::Command::new("kubectl")
                        .args(["explain", path])
                        .env("KUBECONFIG", &kubeconfig)
                        .output()?;
                    // kubectl wraps descriptions at the terminal's width: compare words.
                    let text = String::from_utf8_lossy(&output.stdout)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    let error = String::from_utf8_lossy(&output.stderr).into_owned();
                    // The API server publishes a new CRD's OpenAPI a moment after it is established.
                    Ok(Check::when(output.status.success(), text, error))
                }
            }
        };
        for (path, expected) in [
            (
                "lfc.spec.followers.tolerations",
                ["Taints the pods tolerate", "tolerationSeconds"],
            ),
            (
                "lfc.spec.ingester.nodeSelector",
                ["Node labels a node must have", "<map[string]string>"],
            ),
            (
                "lfc.spec.followers.affinity",
                ["soft spread across nodes", "podAntiAffinity"],
            ),
            (
                "lfc.spec.ingester.podAnnotations",
                ["Annotations on the pod template", "lotus-follower.io/"],
            ),
        ] {
            let text = wait_until(
                &format!("kubectl explain {path}"),
                Duration::from_secs(30),
                explain(path),
            )
            .await?;
            println!("kubectl explain {path}:\n{text}");
            for want in expected {
                assert!(text.contains(want), "{path}: {want:?} missing from\n{text}");
            }
        }
        Ok(())
    })
    .await
}
