//! `render`: the children the operator would create for a resource, printed
//! as YAML like `helm template`, for review and for GitOps. The same pipeline
//! steps the controller runs — validate, then build (`build::desired`) — with
//! what the controller would discover from the cluster given as options.

use serde::Deserialize;

use crate::{
    build::{self, Environment},
    crd::LotusFollowerCluster,
    reconcile::validate,
};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("document {document}: not a valid LotusFollowerCluster: {source}")]
    Resource {
        document: usize,
        source: serde_json::Error,
    },
    #[error("{name}: the operator would not apply this spec: {problems}")]
    Invalid { name: String, problems: String },
    #[error("cannot serialize a child: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("no LotusFollowerCluster in the input")]
    Empty,
}

/// What the controller knows beyond the resource.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// For a resource without `metadata.namespace` (as `kubectl apply
    /// --namespace` would place it); `default` when absent.
    pub namespace: Option<String>,
    pub environment: Environment,
}

/// Every child of every `LotusFollowerCluster` in `yaml` (a multi-document
/// stream; other kinds, such as the Secrets an example needs, are skipped), as
/// one YAML stream in apply order.
///
/// A resource read from a file has no UID, so its children carry no owner
/// reference (the operator adds it when it applies them); one exported from the
/// API server (`kubectl get lfc <name> -o yaml`) renders exactly what the
/// operator applies.
pub fn render(yaml: &str, options: &RenderOptions) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut rendered = 0;
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_json::to_value(serde_yaml::Value::deserialize(document)?)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("LotusFollowerCluster") {
            continue;
        }
        let mut cluster: LotusFollowerCluster =
            serde_json::from_value(value).map_err(|source| RenderError::Resource {
                document: index + 1,
                source,
            })?;
        if cluster.metadata.namespace.is_none() {
            cluster.metadata.namespace = Some(
                options
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            );
        }
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let problems = validate::validate(&cluster);
        if !problems.is_empty() {
            let problems: Vec<String> = problems
                .iter()
                .map(|p| format!("{} ({})", p.message, p.reason))
                .collect();
            return Err(RenderError::Invalid {
                name,
                problems: problems.join("; "),
            });
        }
        for mut object in build::desired(&cluster, &options.environment).objects()? {
            if cluster.metadata.uid.is_none()
                && let Some(metadata) = object.get_mut("metadata").and_then(|m| m.as_object_mut())
            {
                metadata.remove("ownerReferences");
            }
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let child = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.push_str(&format!("---\n# {name}: {kind}/{child}\n"));
            out.push_str(&serde_yaml::to_string(&object)?);
        }
        rendered += 1;
    }
    if rendered == 0 {
        return Err(RenderError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(yaml: &str) -> Vec<String> {
        yaml.lines()
            .filter_map(|line| line.strip_prefix("# "))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_minimal_example_renders_its_children_in_apply_order() -> anyhow::Result<()> {
        let yaml = include_str!("../../manifests/examples/minimal.yaml");
        let out = render(yaml, &RenderOptions::default())?;
        let kinds = kinds(&out);
        assert_eq!(
            kinds[..8],
            [
                "minimal: ServiceAccount/minimal-ingester",
                "minimal: RoleBinding/minimal-ingester",
                "minimal: Lease/minimal-ingester",
                "minimal: Deployment/minimal-ingester",
                "minimal: Deployment/minimal-followers",
                "minimal: Service/minimal-rpc",
                "minimal: PodDisruptionBudget/minimal-followers",
                "minimal: Service/minimal-metrics",
            ]
        );
        assert!(
            kinds[8..]
                .iter()
                .all(|k| k.starts_with("minimal: NetworkPolicy/")),
            "{kinds:?}"
        );
        assert!(out.contains("namespace: default"), "{out}");
        assert!(!out.contains("ownerReferences"), "no UID, no owner: {out}");
        Ok(())
    }

    #[test]
    fn what_the_cluster_offers_changes_the_children() -> anyhow::Result<()> {
        let yaml = include_str!("../../manifests/examples/external.yaml");
        let plain = render(yaml, &RenderOptions::default())?;
        let options = RenderOptions {
            namespace: Some("rpc".into()),
            environment: Environment {
                operator_namespace: Some("lotus-follower-system".into()),
                service_monitors: true,
            },
        };
        let monitored = render(yaml, &options)?;
        assert!(
            kinds(&plain)
                .iter()
                .any(|k| k == "fleet: HorizontalPodAutoscaler/fleet-followers")
        );
        assert!(!plain.contains("kind: ServiceMonitor"));
        assert!(monitored.contains("kind: ServiceMonitor"));
        assert!(monitored.contains("namespace: rpc"));
        Ok(())
    }

    #[test]
    fn other_kinds_are_skipped_and_no_resource_is_an_error() -> anyhow::Result<()> {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
        let both = format!(
            "{secret}---\n{}",
            include_str!("../../manifests/examples/minimal.yaml")
        );
        assert!(render(&both, &RenderOptions::default())?.contains("Deployment/minimal-followers"));
        assert!(matches!(
            render(secret, &RenderOptions::default()),
            Err(RenderError::Empty)
        ));
        Ok(())
    }

    #[test]
    fn a_spec_the_operator_would_refuse_is_refused() {
        let yaml = include_str!("../../manifests/examples/minimal.yaml").replace(
            "  followers:\n",
            "  followers:\n    extraArgs: [\"--network=mainnet\"]\n",
        );
        let error = render(&yaml, &RenderOptions::default()).map(|_| ());
        assert!(
            matches!(error, Err(RenderError::Invalid { .. })),
            "{error:?}"
        );
    }
}
