//! Scraping: a headless Service `<name>-metrics` in front of the ingester's
//! and followers' metrics ports (for any Prometheus's service discovery), and,
//! where the cluster serves the Prometheus Operator's
//! `monitoring.coreos.com/v1` ServiceMonitor kind, the ServiceMonitor `<name>`
//! scraping it.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::json;

use super::{
    common::{child_metadata, selector_labels},
    followers::METRICS_PORT,
};
use crate::crd::LotusFollowerCluster;

const COMPONENT: &str = "metrics";

/// The ServiceMonitor kind (not in k8s-openapi: it is the Prometheus Operator's).
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// Selects every pod of the fleet that has a `metrics` port (ingester and
/// followers): the selector labels without the component.
pub fn metrics_service(cluster: &LotusFollowerCluster) -> Service {
    let mut selector = selector_labels(cluster, COMPONENT);
    selector.remove("app.kubernetes.io/component");
    Service {
        metadata: child_metadata(cluster, COMPONENT, COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn service_monitor(cluster: &LotusFollowerCluster) -> DynamicObject {
    let resource = service_monitor_resource();
    let mut metadata = child_metadata(cluster, COMPONENT, COMPONENT);
    metadata.name = Some(cluster.name_any());
    DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata,
        data: json!({
            "spec": {
                "selector": {"matchLabels": selector_labels(cluster, COMPONENT)},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{fixture, followers, ingester};

    #[test]
    fn the_metrics_service_selects_ingester_and_followers() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let service = metrics_service(&cluster);
        let selector = service
            .spec
            .and_then(|spec| spec.selector)
            .unwrap_or_default();
        for deployment in [
            followers::deployment(&cluster),
            ingester::deployment(&cluster),
        ] {
            let labels = deployment
                .spec
                .and_then(|spec| spec.template.metadata)
                .and_then(|meta| meta.labels)
                .unwrap_or_default();
            assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        }
        let monitor = service_monitor(&cluster);
        assert_eq!(monitor.metadata.name.as_deref(), Some("demo"));
        assert_eq!(
            monitor.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "metrics"
        );
        Ok(())
    }
}
