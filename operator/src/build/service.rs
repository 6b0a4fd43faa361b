//! The RPC Service `<name>-rpc`: the fleet's load-balanced endpoint.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{ResourceExt, api::ObjectMeta};

use super::{
    common::{child_metadata, child_name, selector_labels},
    followers::{COMPONENT, RPC_PORT},
};
use crate::crd::{LotusFollowerCluster, ServiceType};

pub fn rpc_service(cluster: &LotusFollowerCluster) -> Service {
    let spec = &cluster.spec.followers.service;
    let service_type = match spec.type_.unwrap_or(ServiceType::ClusterIP) {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: ObjectMeta {
            annotations: (!spec.annotations.is_empty()).then(|| spec.annotations.clone()),
            ..child_metadata(cluster, "rpc", COMPONENT)
        },
        spec: Some(ServiceSpec {
            type_: Some(service_type.into()),
            selector: Some(selector_labels(cluster, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("rpc".into()),
                port: spec.port.unwrap_or(RPC_PORT),
                target_port: Some(IntOrString::String("rpc".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The in-cluster endpoint users call (reported in the status).
pub fn endpoint(cluster: &LotusFollowerCluster) -> String {
    let port = cluster.spec.followers.service.port.unwrap_or(RPC_PORT);
    format!(
        "http://{}.{}.svc:{port}/rpc/v1",
        child_name(cluster, "rpc"),
        cluster.namespace().unwrap_or_else(|| "default".into())
    )
}
