//! `lotus-follower-operator render` (the README's "Review what the operator
//! creates") prints what the operator really creates: each example is applied
//! and reconciled by the operator (in-process, as its ServiceAccount, on kwok's
//! nodes), then rendered from the live resource; every rendered object exists
//! on the API server with every rendered field as rendered (the server only
//! adds: defaults, status, metadata it sets), and the operator made no child of
//! those kinds that render left out.

use std::{collections::BTreeSet, time::Duration};

use kube::api::PostParams;
use lotus_follower_e2e::{
    Check, TestBed, TestNamespace, TestOperator, install_crds, repo_root, wait_until,
};
use lotus_follower_operator::{
    build::Environment,
    crd::LotusFollowerCluster,
    render::{RenderOptions, render},
};
use serde_json::Value;

const EXAMPLES: &[(&str, &str)] = &[
    ("manifests/examples/minimal.yaml", "minimal"),
    ("manifests/examples/calibnet.yaml", "calibnet"),
    ("manifests/examples/external.yaml", "fleet"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_prints_what_the_operator_creates_for_every_example() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, "render").await?;
        let operator = TestOperator::start(&bed, &client, &ns, "render", Duration::from_secs(30)).await?;
        let clusters = ns.api::<LotusFollowerCluster>();
        // What the operator discovers: its namespace (its election's) and the
        // ServiceMonitor kind, served.
        let options = RenderOptions {
            namespace: None,
            environment: Environment { operator_namespace: Some(ns.name.clone()), service_monitors: true },
        };
        for (path, name) in EXAMPLES {
            let text = std::fs::read_to_string(repo_root().join(path))?;
            clusters.create(&PostParams::default(), &serde_yaml::from_str(&text)?).await?;
            // The resource as the API server holds it, as `kubectl get -o yaml` prints it.
            let live = bed.kubectl(&["get", "lfc", name, "--namespace", &ns.name, "-o", "yaml"])?;
            let rendered = render(&live, &options)?;
            let objects = documents(&rendered)?;
            let compared = wait_until(&format!("{path}: the live children as rendered"), Duration::from_secs(90), || async {
                let mut differences = Vec::new();
                for object in &objects {
                    match bed.command("kubectl", &["get", &reference(object), "--namespace", &ns.name, "-o", "json"], None)? {
                        ran if ran.success => {
                            let live: Value = serde_json::from_str(&ran.stdout)?;
                            differ(&reference(object), object, &live, &mut differences);
                        }
                        ran => differences.push(format!("{}: {}", reference(object), ran.stderr.trim())),
                    }
                }
                Ok(Check::when(differences.is_empty(), objects.len(), differences.join("; ")))
            })
            .await?;
            // Nothing of the fleet beyond what render printed.
            let rendered_refs: BTreeSet<String> = objects.iter().map(reference).collect();
            for kind in ["deployments.v1.apps", "services", "serviceaccounts", "rolebindings.v1.rbac.authorization.k8s.io",
                         "poddisruptionbudgets.v1.policy", "horizontalpodautoscalers.v2.autoscaling",
                         "networkpolicies.v1.networking.k8s.io", "servicemonitors.v1.monitoring.coreos.com"] {
                let names = bed.kubectl(&["get", kind, "--namespace", &ns.name, "-l", &format!("app.kubernetes.io/instance={name}"),
                                          "-o", "jsonpath={range .items[*]}{.kind}.{.apiVersion}/{.metadata.name}{\"\\n\"}{end}"])?;
                for line in names.lines() {
                    let live_ref = live_reference(line);
                    assert!(rendered_refs.contains(&live_ref), "{path}: the operator made {live_ref}, which render did not print");
                }
            }
            println!("{path}: {compared} rendered objects, each as the operator applied it: {rendered_refs:?}");
        }
        operator.stop().await?;
        ns.delete().await
    })
    .await
}

fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            Ok(serde_json::to_value(serde_yaml::Value::deserialize(
                document,
            )?)?)
        })
        .filter(|value: &anyhow::Result<Value>| !matches!(value, Ok(Value::Null)))
        .collect()
}

/// `kind.version.group/name` as kubectl takes it (`kind/name` for the core group).
fn reference(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((group, version)) => format!("{kind}.{version}.{group}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// `Kind.group/version/name` (what the jsonpath above prints) as [`reference`].
fn live_reference(line: &str) -> String {
    let (kind, rest) = line.split_once('.').unwrap_or_default();
    let (api_version, name) = rest.rsplit_once('/').unwrap_or_default();
    reference(
        &serde_json::json!({"kind": kind, "apiVersion": api_version, "metadata": {"name": name}}),
    )
}

/// Every field of `want` is in `live` with the same value; `live` may have more
/// (what the server adds). Arrays match element by element.
fn differ(path: &str, want: &Value, live: &Value, out: &mut Vec<String>) {
    match (want, live) {
        (Value::Object(want), Value::Object(live)) => {
            for (key, value) in want {
                match live.get(key) {
                    Some(live) => differ(&format!("{path}.{key}"), value, live, out),
                    None if value.is_null() => {}
                    None => out.push(format!(
                        "{path}.{key}: rendered {value}, absent on the server"
                    )),
                }
            }
        }
        (Value::Array(want), Value::Array(live)) if want.len() == live.len() => {
            for (index, (want, live)) in want.iter().zip(live).enumerate() {
                differ(&format!("{path}[{index}]"), want, live, out);
            }
        }
        (Value::Number(want), Value::Number(live)) if want.as_f64() == live.as_f64() => {}
        (want, live) if want == live => {}
        (want, live) => out.push(format!("{path}: rendered {want}, the server has {live}")),
    }
}

#[test]
fn differences_ignore_what_the_server_adds_only() {
    let want = serde_json::json!({"spec": {"ports": [{"port": 1234}], "type": "ClusterIP"}});
    let live = serde_json::json!({"spec": {"ports": [{"port": 1234, "protocol": "TCP"}], "type": "ClusterIP", "clusterIP": "10.0.0.1"}});
    let mut out = Vec::new();
    differ("svc", &want, &live, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let changed = serde_json::json!({"spec": {"ports": [{"port": 80}], "type": "ClusterIP"}});
    differ("svc", &want, &changed, &mut out);
    assert_eq!(
        out,
        ["svc.spec.ports[0].port: rendered 1234, the server has 80"]
    );
}
