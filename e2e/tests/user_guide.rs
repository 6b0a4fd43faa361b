//! The README's "User guide", run on the test bed's real node: every command of
//! its sections, as written, in order — install the chart, check what the
//! operator may do, apply the minimal example, watch it to `Ready`, query it
//! through its Service, upgrade the operator and the fleet, uninstall (the CRD
//! and the fleet stay) and install again (the fleet is adopted, no pod
//! restarted). Only the namespaces are the test's own, the operator gets the
//! test bed's placement (`e2e/tools/demo/operator-values.yaml`), and the example
//! fleet the same placement and the test bed's database (`Backing`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use lotus_follower_e2e::{
    Backing, Check, PortForward, TestBed, TestNamespace, repo_root, wait_until,
};
use lotus_follower_operator::{build::OPERATOR_IMAGE, crd::LotusFollowerCluster};
use serde_json::{Value, json};

const README: &str = include_str!("../../README.md");
const SETTLE: Duration = Duration::from_secs(300);
/// The README's names, replaced by the test's own.
const OPERATOR_NAMESPACE: &str = "lotus-follower-system";
const FLEET_NAMESPACE: &str = "lotus-fleet";
const RELEASE: &str = "lotus-follower-operator";
const EXAMPLE: &str = "manifests/examples/minimal.yaml";
const FLEET: &str = "minimal";

/// The shell commands of one README section (`### title`), a command's
/// continuation lines joined, comments left out.
fn commands(section: &str) -> anyhow::Result<Vec<String>> {
    let heading = format!("### {section}\n");
    let start = README
        .find(&heading)
        .ok_or_else(|| anyhow::anyhow!("the README has no section {heading:?}"))?;
    let body = &README[start + heading.len()..];
    let end = [body.find("\n## "), body.find("\n### ")]
        .into_iter()
        .flatten()
        .min();
    let body = &body[..end.unwrap_or(body.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut command = String::new();
    for line in body.lines() {
        match line.trim_end() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            line if in_block && !line.starts_with('#') => {
                command.push_str(line.trim_end_matches('\\').trim());
                if line.ends_with('\\') {
                    command.push(' ');
                } else {
                    commands.push(std::mem::take(&mut command));
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        !commands.is_empty(),
        "README section {section:?} has no commands"
    );
    Ok(commands)
}

/// One run of the guide: the test's namespaces and files in place of the README's.
struct Guide<'a> {
    bed: &'a TestBed,
    operator_ns: String,
    fleet_ns: String,
    values: PathBuf,
    example: PathBuf,
    /// `kubectl port-forward` commands run in the background, and their local port.
    forwards: Vec<PortForward>,
}

impl Guide<'_> {
    fn substitute(&self, command: &str) -> String {
        let mut command = command
            .replace(OPERATOR_NAMESPACE, &self.operator_ns)
            .replace(FLEET_NAMESPACE, &self.fleet_ns)
            .replace(EXAMPLE, &self.example.display().to_string());
        if let Some(forward) = self.forwards.last() {
            command = command.replace(
                "127.0.0.1:1234",
                &format!("127.0.0.1:{}", forward.local_ports[0]),
            );
        }
        if command.starts_with("helm install ") || command.starts_with("helm upgrade ") {
            command.push_str(&format!(" --values {}", self.values.display()));
        }
        command
    }

    /// Runs the section's commands; their outputs, in order.
    fn run(&mut self, section: &str) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let mut outputs = Vec::new();
        for command in commands(section)? {
            let command = self.substitute(&command);
            if command.starts_with("kubectl create namespace ") {
                // The test made it (and deletes it when it passes).
                outputs.push(String::new());
                continue;
            }
            if let Some(rest) = command.strip_prefix("kubectl port-forward ") {
                let words: Vec<&str> = rest.trim_end_matches('&').split_whitespace().collect();
                let namespace = words
                    .iter()
                    .skip_while(|w| **w != "--namespace")
                    .nth(1)
                    .copied()
                    .unwrap_or("default");
                let target = words
                    .iter()
                    .find(|w| w.contains('/'))
                    .copied()
                    .unwrap_or_default();
                self.forwards
                    .push(PortForward::start(namespace, target, &[1234])?);
                println!(
                    "README § {section}: $ {command}\n  (forwarding to 127.0.0.1:{})",
                    self.forwards[self.forwards.len() - 1].local_ports[0]
                );
                outputs.push(String::new());
                continue;
            }
            let output = self
                .bed
                .command("bash", &["-c", &command], None)?
                .ok(&format!("README § {section}: {command}"))?;
            println!("README § {section}: $ {command}\n{}", output.trim_end());
            outputs.push(output);
        }
        println!(
            "README § {section}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(outputs)
    }
}

fn write_temp(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_guide_works_as_written() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        let operator_ns = TestNamespace::create(&client, "guide-operator").await?;
        let fleet_ns = TestNamespace::create(&client, "guide-fleet").await?;
        let backing = Backing::create(&bed, &client, &fleet_ns).await?;
        let dir = tempfile::tempdir()?;
        let values = write_temp(
            dir.path(),
            "values.yaml",
            &backing.fill_file("e2e/tools/demo/operator-values.yaml")?,
        )?;
        let mut fleet: Value =
            serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(EXAMPLE))?)?;
        backing.place(&mut fleet);
        let example = write_temp(dir.path(), "minimal.yaml", &serde_yaml::to_string(&fleet)?)?;
        let mut guide = Guide {
            bed: &bed,
            operator_ns: operator_ns.name.clone(),
            fleet_ns: fleet_ns.name.clone(),
            values,
            example,
            forwards: Vec::new(),
        };
        let deployments = Api::<Deployment>::namespaced(client.clone(), &operator_ns.name);
        let operator_pods = Api::<Pod>::namespaced(client.clone(), &operator_ns.name);
        let fleets = Api::<LotusFollowerCluster>::namespaced(client.clone(), &fleet_ns.name);

        // Install: the operator's pods run for real on the real node, from its image.
        let installed = guide.run("Install the operator")?;
        // NOTES.txt tells what to apply next.
        assert!(
            installed[1].contains("manifests/examples/minimal.yaml"),
            "helm install printed: {}",
            installed[1]
        );
        let first = running_operator_pods(&operator_pods, &backing.node.name).await?;
        println!(
            "operator pods on {}: {:?}",
            backing.node.name,
            first.keys().collect::<Vec<_>>()
        );

        // Its RBAC: what the guide lists, and nothing outside it.
        let listed = guide.run("What the operator may do")?.join("\n");
        assert!(
            listed.contains("lotusfollowerclusters.lotus-follower.io"),
            "{listed}"
        );
        may_and_may_not(&bed, &operator_ns.name, &fleet_ns.name)?;

        guide.run("Apply a fleet")?;
        let watched = guide.run("Watch it")?;
        assert!(
            watched[0].contains(FLEET),
            "kubectl get lfc: {}",
            watched[0]
        );
        for condition in ["Ready=True", "FollowersReady=True", "IngesterReady=True"] {
            assert!(
                watched[2].contains(condition),
                "{condition} not in {}",
                watched[2]
            );
        }
        assert!(
            watched[3].contains("Applied"),
            "no Applied event: {}",
            watched[3]
        );

        let answer: Value = serde_json::from_str(
            guide
                .run("Query it through its Service")?
                .last()
                .map_or("", |s| s.as_str()),
        )?;
        let height = answer["result"]["Height"].as_i64();
        assert!(height.is_some(), "ChainHead through the Service: {answer}");
        guide.forwards.clear();

        // Upgrade: changed values roll the operator's pods; the fleet scales.
        guide.run("Upgrade the operator and a fleet")?;
        let second = running_operator_pods(&operator_pods, &backing.node.name).await?;
        assert!(
            first.keys().all(|name| !second.contains_key(name)),
            "not rolled: {first:?} → {second:?}"
        );
        assert!(
            second.values().all(|log_level| log_level == "debug"),
            "{second:?}"
        );
        println!(
            "helm upgrade rolled the operator: {:?} → {:?}",
            first.keys().collect::<Vec<_>>(),
            second.keys().collect::<Vec<_>>()
        );

        // Uninstall: the operator goes; the CRD, the fleet and its pods stay.
        let children = children_uids(&client, &fleet_ns.name).await?;
        let fleet_pods = pod_uids(&client, &fleet_ns.name).await?;
        guide.run("Uninstall")?;
        wait_until("the operator's Deployment gone", SETTLE, || async {
            Ok(Check::when(
                deployments.get_opt(RELEASE).await?.is_none(),
                (),
                "present",
            ))
        })
        .await?;
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get("lotusfollowerclusters.lotus-follower.io")
            .await?;
        assert!(
            crd.metadata.deletion_timestamp.is_none(),
            "the CRD is being deleted"
        );
        assert!(fleets.get_opt(FLEET).await?.is_some(), "the fleet is gone");
        assert_eq!(
            children_uids(&client, &fleet_ns.name).await?,
            children,
            "the fleet's children changed"
        );

        // Installing again adopts the fleet: same children, same pods, and the
        // new operator acts on a spec change.
        guide.run("Install the operator")?;
        fleets
            .patch(
                FLEET,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"followers": {"replicas": 2}}})),
            )
            .await?;
        wait_until("the adopted fleet scaled back to 2/2", SETTLE, || async {
            let status = fleets.get_status(FLEET).await?.status.unwrap_or_default();
            Ok(Check::when(
                status.followers.as_deref() == Some("2/2"),
                (),
                format!("{:?}", status.followers),
            ))
        })
        .await?;
        assert_eq!(
            children_uids(&client, &fleet_ns.name).await?,
            children,
            "a reinstall recreated children"
        );
        let kept = pod_uids(&client, &fleet_ns.name).await?;
        let restarted: Vec<_> = fleet_pods
            .iter()
            .filter(|(name, _)| name.contains("ingester"))
            .filter(|(name, uid)| kept.get(*name) != Some(uid))
            .collect();
        assert!(
            restarted.is_empty(),
            "the reinstall restarted the ingester: {restarted:?}"
        );
        println!(
            "reinstalled: the fleet's {} children kept their UIDs",
            children.len()
        );

        // Clean up: the release, the fleet, the namespaces, the keyspace and roles.
        bed.helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &operator_ns.name,
            "--wait",
        ])?;
        fleets.delete(FLEET, &DeleteParams::foreground()).await?;
        drop(guide);
        operator_ns.delete().await?;
        fleet_ns.delete().await?;
        backing.drop(&bed).await
    })
    .await
}

/// The operator's pods, once the Deployment is rolled out and each runs on the
/// real node from the operator's image and is Ready: name → its RUST_LOG.
async fn running_operator_pods(
    pods: &Api<Pod>,
    node: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    wait_until(
        "the operator's pods Running and Ready on the real node",
        SETTLE,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={RELEASE}")))
                .await?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().filter(|pod| {
                let spec = pod.spec.clone().unwrap_or_default();
                let status = pod.status.clone().unwrap_or_default();
                spec.node_name.as_deref() == Some(node)
                    && spec.containers[0].image.as_deref() == Some(OPERATOR_IMAGE)
                    && status
                        .container_statuses
                        .unwrap_or_default()
                        .iter()
                        .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
                    && status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            let ready: BTreeMap<String, String> = ready
                .map(|pod| {
                    let level = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers[0].env.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .find(|e| e.name == "RUST_LOG")
                        .and_then(|e| e.value)
                        .unwrap_or_default();
                    (pod.name_any(), level)
                })
                .collect();
            let done = ready.len() == 2 && live.len() == 2;
            Ok(Check::when(
                done,
                ready,
                format!("{} live pods", live.len()),
            ))
        },
    )
    .await
    .map_err(Into::into)
}

/// `kubectl auth can-i` as the operator's ServiceAccount: what it needs, yes;
/// anything beyond, no.
fn may_and_may_not(bed: &TestBed, operator_ns: &str, fleet_ns: &str) -> anyhow::Result<()> {
    let account = format!("system:serviceaccount:{operator_ns}:{RELEASE}");
    for (expected, verb, resource, namespace) in [
        (true, "patch", "deployments.apps", fleet_ns),
        (
            true,
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            fleet_ns,
        ),
        (
            true,
            "bind",
            "clusterroles.rbac.authorization.k8s.io/lotus-follower-ingester",
            fleet_ns,
        ),
        (
            true,
            "patch",
            "lotusfollowerclusters.lotus-follower.io --subresource=status",
            fleet_ns,
        ),
        (
            true,
            "patch",
            "leases.coordination.k8s.io/lotus-follower-operator",
            operator_ns,
        ),
        (false, "create", "pods", fleet_ns),
        (false, "get", "secrets", fleet_ns),
        (false, "patch", "leases.coordination.k8s.io", "kube-system"),
        (
            false,
            "update",
            "leases.coordination.k8s.io/minimal-ingester",
            fleet_ns,
        ),
        (
            false,
            "patch",
            "leases.coordination.k8s.io/another",
            operator_ns,
        ),
        (false, "delete", "services", fleet_ns),
        (
            false,
            "bind",
            "clusterroles.rbac.authorization.k8s.io/cluster-admin",
            fleet_ns,
        ),
        (
            false,
            "patch",
            "lotusfollowerclusters.lotus-follower.io",
            fleet_ns,
        ),
        (false, "patch", "deployments.apps", "kube-system"),
        (false, "create", "roles.rbac.authorization.k8s.io", fleet_ns),
    ] {
        let mut args = vec!["auth", "can-i", verb];
        args.extend(resource.split(' '));
        args.extend(["--namespace", namespace, "--as", &account]);
        let ran = bed.command("kubectl", &args, None)?;
        let answer = ran.stdout.trim();
        println!("kubectl auth can-i {verb} {resource} --namespace {namespace}: {answer}");
        assert_eq!(
            answer,
            if expected { "yes" } else { "no" },
            "{verb} {resource} in {namespace}: {}",
            ran.stderr
        );
    }
    Ok(())
}

/// The fleet's Deployments and Services: name → UID.
async fn children_uids(
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={FLEET}"));
    let mut uids = BTreeMap::new();
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&selector)
        .await?
    {
        uids.insert(
            format!("deployment/{}", d.name_any()),
            d.uid().unwrap_or_default(),
        );
    }
    for s in Api::<Service>::namespaced(client.clone(), ns)
        .list(&selector)
        .await?
    {
        uids.insert(
            format!("service/{}", s.name_any()),
            s.uid().unwrap_or_default(),
        );
    }
    anyhow::ensure!(!uids.is_empty(), "the fleet has no children");
    Ok(uids)
}

async fn pod_uids(client: &kube::Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={FLEET}"));
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&selector)
        .await?
        .into_iter()
        .map(|pod| (pod.name_any(), pod.uid().unwrap_or_default()))
        .collect())
}

#[test]
fn every_guide_section_has_commands() -> anyhow::Result<()> {
    for section in [
        "Install the operator",
        "What the operator may do",
        "Apply a fleet",
        "Watch it",
        "Query it through its Service",
        "Review what the operator creates",
        "Upgrade the operator and a fleet",
        "Uninstall",
    ] {
        let commands = commands(section)?;
        println!("{section}: {commands:#?}");
    }
    assert_eq!(
        commands("Install the operator")?[1],
        "helm install lotus-follower-operator charts/lotus-follower-operator --namespace lotus-follower-system --create-namespace"
    );
    Ok(())
}
