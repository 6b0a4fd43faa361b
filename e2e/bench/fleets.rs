//! `fleet-bench`: the operator at scale on the test bed (`e2e/testbed
//! fleet-bench`, README "The operator at scale"). N fleets in one namespace,
//! the release operator binary as its own process and ServiceAccount:
//!
//! - the baseline: `kubectl apply --server-side` of the same children,
//!   rendered by the operator's builders, for N fleets of another namespace;
//! - the operator: `kubectl apply` of the N resources until every child is
//!   present, its RSS sampled throughout;
//! - a no-op resync round and an operator restart: writes counted in the
//!   audit log (goal 0: no reconcile storm);
//! - Lease renewals of every fleet: the operator's reads counted (goal 0).
//!
//! Prints a table and one JSON line. Fails only when a zero-goal is missed;
//! the time ratio and RSS are reported against their goals.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRoleBinding, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use lotus_follower_e2e::{
    OPERATOR, TestBed, TestNamespace, http_get, install_crds, install_operator_rbac, metric_sum,
};
use lotus_follower_operator::{
    build::{self, Environment},
    crd::LotusFollowerCluster,
};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Create N fleets on the test bed and measure the operator")]
struct Args {
    /// How many fleets.
    #[arg(long, default_value_t = 100)]
    fleets: usize,
    /// The operator binary (release build).
    #[arg(long)]
    operator: PathBuf,
    /// The operator's resync interval during the run.
    #[arg(long, default_value = "20")]
    resync_seconds: u64,
}

const LABEL: &str = "app.kubernetes.io/managed-by=lotus-follower-operator";

fn fleet(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "lotus-follower.io/v1alpha1",
        "kind": "LotusFollowerCluster",
        "metadata": {"name": name},
        "spec": {
            "network": "calibnet",
            "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_calibnet"}},
            "leader": {"external": {"url": "http://lotus.lotus.svc:1234/rpc/v1"}},
            "followers": {"replicas": 2, "nodeSelector": {"type": "kwok"}},
            "ingester": {"nodeSelector": {"type": "kwok"}},
        },
    })
}

fn kubectl(bed: &TestBed, args: &[&str], input: Option<&[u8]>) -> anyhow::Result<String> {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &bed.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("kubectl (is the test bed's PATH set?): {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input)?;
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Every child the fleets of `ns` should have, given whether ServiceMonitors are served.
fn expected_children(fleets: usize, monitors: bool) -> usize {
    // ServiceAccount, RoleBinding, Lease, 2 Deployments, 2 Services, PDB, 2 NetworkPolicies.
    fleets * (10 + usize::from(monitors))
}

async fn count<K>(client: &Client, ns: &str) -> anyhow::Result<usize>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    Ok(api
        .list_metadata(&ListParams::default().labels(LABEL))
        .await?
        .items
        .len())
}

async fn children(client: &Client, ns: &str, monitors: bool) -> anyhow::Result<usize> {
    let mut total = count::<ServiceAccount>(client, ns).await?
        + count::<RoleBinding>(client, ns).await?
        + count::<Lease>(client, ns).await?
        + count::<Deployment>(client, ns).await?
        + count::<Service>(client, ns).await?
        + count::<PodDisruptionBudget>(client, ns).await?
        + count::<NetworkPolicy>(client, ns).await?;
    if monitors {
        let resource = build::monitoring::service_monitor_resource();
        let api = Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, &resource);
        total += api
            .list_metadata(&ListParams::default().labels(LABEL))
            .await?
            .items
            .len();
    }
    Ok(total)
}

/// The operator as a process of its own, logged in as its ServiceAccount.
struct OperatorProcess {
    child: Child,
    metrics: std::net::SocketAddr,
}

impl OperatorProcess {
    fn start(
        binary: &Path,
        kubeconfig: &Path,
        ns: &str,
        resync: u64,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let metrics = lotus_follower_e2e::free_address()?;
        let child = Command::new(binary)
            .args([
                "run",
                "--namespace",
                ns,
                "--election-namespace",
                ns,
                "--identity",
                "bench",
            ])
            .args([
                "--metrics-listen",
                &metrics.to_string(),
                "--resync-seconds",
                &resync.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", binary.display()))?;
        Ok(Self { child, metrics })
    }

    /// Resident memory now and its peak (VmRSS, VmHWM), MiB.
    fn rss(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = http_get(self.metrics, "/metrics").await?;
        Ok(metric_sum(&body, name))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Ok((200, _)) = http_get(self.metrics, "/readyz").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the operator did not become ready")
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Waits until every fleet's workloads are Ready (kwok takes a while for
/// hundreds of pods, and each step is a real status change) and the operator
/// has written nothing for ten seconds.
async fn settle(operator: &OperatorProcess, ns: &TestNamespace) -> anyhow::Result<()> {
    let clusters = ns.api::<LotusFollowerCluster>();
    let started = Instant::now();
    let (mut writes, mut quiet_since) = (-1.0, Instant::now());
    loop {
        let now = operator
            .metric("lotus_follower_operator_writes_total")
            .await?;
        if now != writes {
            (writes, quiet_since) = (now, Instant::now());
        }
        let ready = clusters
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .all(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Syncing"));
        if ready && quiet_since.elapsed() >= Duration::from_secs(10) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the fleets did not settle in 10 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A kubeconfig logging in as the operator's ServiceAccount of `ns`.
async fn service_account_kubeconfig(
    bed: &TestBed,
    ns: &TestNamespace,
    path: &Path,
) -> anyhow::Result<()> {
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = ns
        .api::<ServiceAccount>()
        .create_token_request(OPERATOR, &Default::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("no token"))?;
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&bed.kubeconfig)?)?;
    kubeconfig["users"] =
        serde_yaml::to_value(vec![json!({"name": "operator", "user": {"token": token}})])?;
    if let Some(contexts) = kubeconfig["contexts"].as_sequence_mut() {
        for context in contexts {
            context["context"]["user"] = "operator".into();
        }
    }
    std::fs::write(path, serde_yaml::to_string(&kubeconfig)?)?;
    Ok(())
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    fleets: usize,
    children: usize,
    kubectl_apply_seconds: f64,
    operator_apply_seconds: f64,
    ratio: f64,
    rss_idle_mib: f64,
    rss_burst_peak_mib: f64,
    noop_resync_reconciles: f64,
    noop_resync_writes: usize,
    renewals: usize,
    renewal_reads: usize,
    renewal_reconciles: f64,
    restart_reconciles: f64,
    restart_writes: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bed = TestBed::from_env()?;
    let admin = bed.kube_client().await?;
    install_crds(&admin).await?;
    let monitors = true; // install_crds serves the ServiceMonitor kind
    let mut report = Report {
        fleets: args.fleets,
        children: expected_children(args.fleets, monitors),
        ..Report::default()
    };
    let names: Vec<String> = (0..args.fleets).map(|i| format!("fleet-{i:03}")).collect();

    // The baseline: the resources exist (owners for the children's
    // references), nobody reconciles them, kubectl applies what the builders render.
    let baseline = TestNamespace::create(&admin, "bench-kubectl").await?;
    let resources: Vec<u8> = names
        .iter()
        .map(|name| serde_yaml::to_string(&fleet(name)))
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n")
        .into_bytes();
    kubectl(
        &bed,
        &["apply", "--server-side", "-n", &baseline.name, "-f", "-"],
        Some(&resources),
    )?;
    let environment = Environment {
        operator_namespace: Some(baseline.name.clone()),
        service_monitors: monitors,
    };
    let mut rendered = String::new();
    for cluster in baseline
        .api::<LotusFollowerCluster>()
        .list(&ListParams::default())
        .await?
    {
        for object in build::desired(&cluster, &environment).objects()? {
            rendered.push_str("---\n");
            rendered.push_str(&serde_yaml::to_string(&object)?);
        }
    }
    let started = Instant::now();
    kubectl(
        &bed,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "fleet-bench",
            "-n",
            &baseline.name,
            "-f",
            "-",
        ],
        Some(rendered.as_bytes()),
    )?;
    report.kubectl_apply_seconds = started.elapsed().as_secs_f64();
    let applied = children(&admin, &baseline.name, monitors).await?;
    anyhow::ensure!(
        applied == report.children,
        "kubectl applied {applied} of {} children",
        report.children
    );

    // The operator, as its ServiceAccount, on a namespace of its own.
    let ns = TestNamespace::create(&admin, "bench-operator").await?;
    let binding = install_operator_rbac(&admin, &ns, "bench").await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("operator.kubeconfig");
    service_account_kubeconfig(&bed, &ns, &kubeconfig).await?;
    let log = dir.path().join("operator.log");
    let operator = OperatorProcess::start(
        &args.operator,
        &kubeconfig,
        &ns.name,
        args.resync_seconds,
        &log,
    )?;
    operator.wait_ready().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_idle_mib = operator.rss()?.0;

    let started = Instant::now();
    kubectl(
        &bed,
        &["apply", "--server-side", "-n", &ns.name, "-f", "-"],
        Some(&resources),
    )?;
    let mut peak: f64 = 0.0;
    loop {
        peak = peak.max(operator.rss()?.0);
        if children(&admin, &ns.name, monitors).await? >= report.children {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "children still missing after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.operator_apply_seconds = started.elapsed().as_secs_f64();
    report.ratio = report.operator_apply_seconds / report.kubectl_apply_seconds;
    report.rss_burst_peak_mib = peak.max(operator.rss()?.1);

    // Every fleet's ingester holds its Lease (a long one: it must not expire
    // within the run, which would rightly change the status). Then, settled,
    // a full resync round writes nothing.
    let leases = ns.api::<Lease>();
    let renew = |holder: bool| {
        let mut spec = json!({"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())});
        if holder {
            spec["holderIdentity"] = "ingester".into();
            spec["leaseDurationSeconds"] = 3600.into();
        }
        json!({"spec": spec})
    };
    for name in &names {
        let patch = Patch::Merge(renew(true));
        leases
            .patch(&format!("{name}-ingester"), &PatchParams::default(), &patch)
            .await?;
    }
    settle(&operator, &ns).await?;
    let user = format!("system:serviceaccount:{}:{OPERATOR}", ns.name);
    let operator_writes = |offset: u64| -> anyhow::Result<usize> {
        Ok(bed
            .audited_writes_since(offset)?
            .into_iter()
            .filter(|w| {
                w.user == user && !(w.resource == "leases" && w.name.as_deref() == Some(OPERATOR))
            })
            .count())
    };
    let offset = bed.audit_offset()?;
    let reconciles = operator
        .metric("lotus_follower_operator_reconciles_total")
        .await?;
    tokio::time::sleep(Duration::from_secs(args.resync_seconds + 2)).await;
    report.noop_resync_reconciles = operator
        .metric("lotus_follower_operator_reconciles_total")
        .await?
        - reconciles;
    report.noop_resync_writes = operator_writes(offset)?;

    // Every fleet's Lease renewed three times, as an ingester would.
    let offset = bed.audit_offset()?;
    let reconciles = operator
        .metric("lotus_follower_operator_reconciles_total")
        .await?;
    for _ in 0..3 {
        for name in &names {
            let patch = Patch::Merge(renew(false));
            leases
                .patch(&format!("{name}-ingester"), &PatchParams::default(), &patch)
                .await?;
            report.renewals += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.renewal_reconciles = operator
        .metric("lotus_follower_operator_reconciles_total")
        .await?
        - reconciles;
    report.renewal_reads = bed
        .audited_since(offset)?
        .into_iter()
        .filter(|r| {
            r.user == user && r.verb == "get"
                || r.user == user && r.verb == "list" && r.resource == "leases"
        })
        .filter(|r| !(r.resource == "leases" && r.name.as_deref() == Some(OPERATOR)))
        .count();

    // A restart: every fleet reconciled once, nothing written.
    operator.stop()?;
    let offset = bed.audit_offset()?;
    let operator = OperatorProcess::start(&args.operator, &kubeconfig, &ns.name, 300, &log)?;
    operator.wait_ready().await?;
    let mut settled = 0.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        settled = operator
            .metric("lotus_follower_operator_reconciles_total")
            .await?;
        if settled >= args.fleets as f64 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.restart_reconciles = operator
        .metric("lotus_follower_operator_reconciles_total")
        .await?
        .max(settled);
    report.restart_writes = operator_writes(offset)?;
    operator.stop()?;

    Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&binding, &DeleteParams::default())
        .await?;
    ns.delete().await?;
    baseline.delete().await?;

    print_report(&report);
    anyhow::ensure!(report.noop_resync_writes == 0, "a no-op resync wrote");
    anyhow::ensure!(report.renewal_reads == 0, "Lease renewals caused reads");
    anyhow::ensure!(report.restart_writes == 0, "the restart wrote");
    anyhow::ensure!(
        report.restart_reconciles >= args.fleets as f64,
        "after the restart only {} of {} fleets were reconciled",
        report.restart_reconciles,
        args.fleets
    );
    Ok(())
}

fn print_report(report: &Report) {
    let goal = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "fleet-bench: {} fleets, {} children",
        report.fleets, report.children
    );
    println!("{:<44} {:>10}  goal", "measure", "value");
    let rows = [
        (
            "kubectl apply --server-side of the children (s)",
            format!("{:.2}", report.kubectl_apply_seconds),
            String::new(),
        ),
        (
            "operator: resources applied → all children (s)",
            format!("{:.2}", report.operator_apply_seconds),
            String::new(),
        ),
        (
            "ratio operator ÷ kubectl",
            format!("{:.2}", report.ratio),
            format!("≤ 1.5 {}", goal(report.ratio <= 1.5)),
        ),
        (
            "operator RSS idle (MiB)",
            format!("{:.1}", report.rss_idle_mib),
            String::new(),
        ),
        (
            "operator RSS peak in the burst (MiB)",
            format!("{:.1}", report.rss_burst_peak_mib),
            format!("≤ 64 {}", goal(report.rss_burst_peak_mib <= 64.0)),
        ),
        (
            "no-op resync: reconciles",
            format!("{}", report.noop_resync_reconciles),
            String::new(),
        ),
        (
            "no-op resync: writes",
            format!("{}", report.noop_resync_writes),
            format!("0 {}", goal(report.noop_resync_writes == 0)),
        ),
        (
            "Lease renewals",
            format!("{}", report.renewals),
            String::new(),
        ),
        (
            "  reads they caused",
            format!("{}", report.renewal_reads),
            format!("0 {}", goal(report.renewal_reads == 0)),
        ),
        (
            "  reconciles they caused",
            format!("{}", report.renewal_reconciles),
            String::new(),
        ),
        (
            "restart: reconciles",
            format!("{}", report.restart_reconciles),
            String::new(),
        ),
        (
            "restart: writes",
            format!("{}", report.restart_writes),
            format!("0 {}", goal(report.restart_writes == 0)),
        ),
    ];
    for (measure, value, goal) in rows {
        println!("{measure:<44} {value:>10}  {goal}");
    }
    if let Ok(json) = serde_json::to_string(report) {
        println!("{json}");
    }
}
