//! The Helm chart `charts/lotus-follower-operator` as a user meets it before
//! installing anything: it lints strictly, renders objects the API server
//! accepts (default values and a values file setting every option), refuses bad
//! values, `manifests/install.yaml` is its rendering with defaults, and its
//! Grafana dashboard asks only for metrics that exist.

use std::collections::BTreeSet;

use lotus_follower_e2e::{TestBed, TestNamespace, install_crds};
use prometheus::core::Collector;
use serde_json::Value;

const CHART: &str = "charts/lotus-follower-operator";
const EVERY_OPTION: &str = "charts/lotus-follower-operator/ci/every-option-values.yaml";

#[test]
fn the_chart_lints_strictly() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    for extra in [&[][..], &["--values", EVERY_OPTION][..]] {
        let args = [&["lint", "--strict", CHART][..], extra].concat();
        let output = bed.helm(&args)?;
        println!("helm {}:\n{output}", args.join(" "));
        assert!(
            output.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{output}"
        );
        assert!(!output.contains("[WARNING]"), "{output}");
    }
    Ok(())
}

/// `helm template … | kubectl apply --dry-run=server -f -`: every object the
/// chart renders passes the API server's validation and admission.
#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_api_server() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        // The every-option values enable a ServiceMonitor.
        install_crds(&client).await?;
        let release_ns = TestNamespace::create(&client, "chart-dry-run").await?;
        let watched = TestNamespace::create(&client, "chart-dry-run-watched").await?;
        let watch = format!(
            r#"watchNamespaces=["{}","{}"]"#,
            release_ns.name, watched.name
        );
        let dashboard_ns = format!("dashboard.namespace={}", watched.name);
        for (what, extra) in [
            ("default values", vec![]),
            (
                "every option",
                vec![
                    "--values",
                    EVERY_OPTION,
                    "--set-json",
                    &watch,
                    "--set",
                    &dashboard_ns,
                ],
            ),
        ] {
            let args = [
                &[
                    "template",
                    "lfo-dry-run",
                    CHART,
                    "--namespace",
                    &release_ns.name,
                ][..],
                &extra,
            ]
            .concat();
            let rendered = bed.helm(&args)?;
            let kinds = kinds(&rendered)?;
            let applied = bed.kubectl_with(&["apply", "--dry-run=server", "-f", "-"], &rendered)?;
            println!(
                "{what}: {} objects ({kinds:?}) accepted:\n{applied}",
                applied.lines().count()
            );
            assert_eq!(applied.lines().count(), kinds.len(), "{applied}");
            assert!(
                applied
                    .lines()
                    .all(|line| line.ends_with("(server dry run)")),
                "{applied}"
            );
        }
        watched.delete().await?;
        release_ns.delete().await
    })
    .await
}

/// The schema refuses values of the wrong shape before anything is rendered.
#[test]
fn bad_values_are_refused() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    for (bad, complaint) in [
        ("replicaCount=-1", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=sha256:abc", "/image/digest"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("leaderElection.enabled=false", "/replicaCount"),
        ("metrics.port=70000", "/metrics/port"),
        ("metrics.service.type=ExternalName", "/metrics/service/type"),
        ("resyncSeconds=0", "/resyncSeconds"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
    ] {
        let ran = bed.command("helm", &["template", "x", CHART, "--set", bad], None)?;
        println!("--set {bad}: {}", ran.stderr.trim());
        assert!(!ran.success, "--set {bad} was accepted");
        assert!(
            ran.stderr
                .contains("don't meet the specifications of the schema"),
            "{}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains(complaint),
            "--set {bad}: {}",
            ran.stderr
        );
    }
    // One replica without an election is fine.
    bed.helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=1",
    ])?;
    Ok(())
}

#[test]
fn install_yaml_is_the_chart_rendered_with_defaults() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let rendered = bed
        .command("manifests/render-install.sh", &[], None)?
        .ok("manifests/render-install.sh")?;
    let committed =
        std::fs::read_to_string(lotus_follower_e2e::repo_root().join("manifests/install.yaml"))?;
    assert!(
        rendered == committed,
        "manifests/install.yaml is stale: run `manifests/render-install.sh > manifests/install.yaml`"
    );
    println!("manifests/install.yaml: {:?}", kinds(&committed)?);
    Ok(())
}

/// Every metric the dashboard's queries name is one the binaries export, or one
/// of kube-state-metrics' standard names.
#[test]
fn the_dashboard_asks_only_for_exported_metrics() -> anyhow::Result<()> {
    let path =
        lotus_follower_e2e::repo_root().join("charts/lotus-follower-operator/files/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    let exported = exported_metrics()?;
    let mut used = BTreeSet::new();
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                exported.contains(&name) || KUBE_STATE_METRICS.contains(&name.as_str()),
                "{name} (in `{query}`) is neither exported by the binaries nor a kube-state-metrics name"
            );
            used.insert(name);
        }
    }
    println!("{} queries use {used:?}", queries.len());
    // What the chart's values say the dashboard shows.
    for shown in [
        "lotus_follower_head_height",
        "lotus_follower_head_lag_seconds",
        "lotus_follower_rpc_requests_total",
        "lotus_follower_rpc_request_duration_seconds_bucket",
        "lotus_follower_cache_hits_total",
        "lotus_follower_cache_misses_total",
        "lotus_follower_ingest_tipsets_total",
        "kube_deployment_status_replicas_available",
    ] {
        assert!(used.contains(shown), "the dashboard does not show {shown}");
    }
    Ok(())
}

/// kube-state-metrics' names the dashboard may use (its docs,
/// `docs/metrics/workload/deployment-metrics.md`).
const KUBE_STATE_METRICS: &[&str] = &[
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas",
    "kube_deployment_status_replicas_available",
    "kube_deployment_status_replicas_ready",
];

/// The series names the follower's and the operator's registries export: a
/// histogram as its `_bucket`, `_sum` and `_count` series.
fn exported_metrics() -> anyhow::Result<BTreeSet<String>> {
    let follower = lotus_follower::metrics::Metrics::new()?;
    let operator = lotus_follower_operator::metrics::Metrics::new()?;
    let plain: [&dyn Collector; 11] = [
        &follower.rpc_requests,
        &follower.head_height,
        &follower.head_lag_seconds,
        &follower.cache_hits,
        &follower.cache_misses,
        &follower.ingest_tipsets,
        &follower.ingest_objects,
        &follower.leader_connected,
        &operator.reconciles,
        &operator.writes,
        &operator.leader,
    ];
    let histograms: [&dyn Collector; 2] = [&follower.rpc_duration, &operator.reconcile_duration];
    let name = |collector: &dyn Collector| -> Vec<String> {
        collector
            .desc()
            .iter()
            .map(|desc| desc.fq_name.clone())
            .collect()
    };
    let mut names: BTreeSet<String> = plain.iter().flat_map(|c| name(*c)).collect();
    for histogram in histograms {
        for base in name(histogram) {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{base}{suffix}"));
            }
        }
    }
    Ok(names)
}

/// Every PromQL expression in the dashboard: panel targets' `expr` and
/// template variables' `query`.
fn collect_queries(value: &Value, queries: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => queries.push(expr.clone()),
                    ("query", Value::Object(query)) => {
                        if let Some(Value::String(expr)) = query.get("query") {
                            queries.push(expr.clone());
                        }
                    }
                    _ => collect_queries(value, queries),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_queries(item, queries)),
        _ => {}
    }
}

/// The metric names in a PromQL expression (or Grafana's
/// `label_values(metric, label)`): identifiers that are not functions,
/// keywords, label matchers, grouping labels, ranges or strings.
fn metric_names(expr: &str) -> Vec<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may take their grouping before the parenthesis (`sum by (x) (…)`).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, end: char| {
        chars[from + 1..]
            .iter()
            .position(|c| *c == end)
            .map_or(chars.len(), |p| from + 2 + p)
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => i = skip_to(i, '"'),
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            c if c.is_ascii_digit() || c == '$' => {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "._".contains(chars[i]))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if call && GROUPING.contains(&word.as_str()) {
                    i = skip_to(next, ')');
                } else if call && word == "label_values" {
                    // Only its first argument is a metric; the second is a label.
                    let close = skip_to(next, ')');
                    let inner: String = chars[next + 1..close.saturating_sub(1)].iter().collect();
                    names.extend(metric_names(inner.split(',').next().unwrap_or_default()));
                    i = close;
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_skip_functions_labels_and_ranges() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{ns=~"$x", code!="0"}[$__rate_interval]))) / b"#
        ),
        ["a_bucket", "b"]
    );
    assert_eq!(metric_names("label_values(c, namespace)"), ["c"]);
}

/// `Kind/name` of every object in a multi-document YAML stream.
fn kinds(yaml: &str) -> anyhow::Result<Vec<String>> {
    use serde::Deserialize;
    let mut kinds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document)?;
        if let (Some(kind), Some(name)) =
            (value["kind"].as_str(), value["metadata"]["name"].as_str())
        {
            kinds.push(format!("{kind}/{name}"));
        }
    }
    Ok(kinds)
}
