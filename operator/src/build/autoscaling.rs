//! The followers' HorizontalPodAutoscaler (`autoscaling/v2`): on the per-pod RPC
//! rate the operator's custom metrics API serves
//! (`lotus_follower_rpc_requests_per_second`), on CPU, or both. `None` when
//! autoscaling is off.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};

use super::{
    common::{child_metadata, child_name},
    followers::COMPONENT,
};
use crate::crd::LotusFollowerCluster;

/// The Pods metric the HPA reads from `custom.metrics.k8s.io`.
pub const RPC_RATE_METRIC: &str = lotus_follower_interfaces::metrics::RPC_REQUESTS_PER_SECOND;

pub fn followers_hpa(cluster: &LotusFollowerCluster) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = cluster.spec.followers.autoscaling.as_ref()?;
    let mut metrics = Vec::new();
    if let Some(rate) = &autoscaling.target_requests_per_second {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: RPC_RATE_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(rate.clone()),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(cpu) = autoscaling.target_cpu_utilization_percentage {
        metrics.push(MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(cpu),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_metadata(cluster, "followers", COMPONENT),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: child_name(cluster, "followers"),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: autoscaling.behavior.clone(),
        },
        status: None,
    })
}
