//! The fleet's NetworkPolicies (`spec.networkPolicy`): `<name>-followers` and
//! `<name>-ingester`. Ingress: the followers' RPC port from anywhere, every
//! metrics port only from the operator's namespace and the listed monitoring
//! namespaces. Egress: the database's and the leader's ports (narrowed to the
//! given CIDRs), DNS, and for the ingester the API server (its Lease). A policy
//! cannot name a Service, hence ports and CIDRs.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
        util::intstr::IntOrString,
    },
};

use super::{
    Environment,
    common::{child_metadata, selector_labels},
    followers::{self, METRICS_PORT, RPC_PORT},
    ingester,
};
use crate::crd::LotusFollowerCluster;

/// CQL's port when a contact point names none.
const CQL_PORT: i32 = 9042;
/// Where an API server listens behind the `kubernetes` Service, when not given.
const API_SERVER_PORTS: [i32; 2] = [443, 6443];
const DNS_PORT: i32 = 53;

/// Both policies, or none when switched off.
pub fn policies(cluster: &LotusFollowerCluster, environment: &Environment) -> Vec<NetworkPolicy> {
    if !cluster.spec.network_policy.enabled {
        return Vec::new();
    }
    vec![
        followers_policy(cluster, environment),
        ingester_policy(cluster, environment),
    ]
}

fn followers_policy(cluster: &LotusFollowerCluster, environment: &Environment) -> NetworkPolicy {
    let mut ingress = vec![
        // Clients: whoever the Service lets in.
        NetworkPolicyIngressRule {
            ports: Some(vec![tcp(RPC_PORT)]),
            from: None,
        },
    ];
    ingress.extend(metrics_ingress(cluster, environment));
    policy(
        cluster,
        "followers",
        followers::COMPONENT,
        ingress,
        workload_egress(cluster),
    )
}

fn ingester_policy(cluster: &LotusFollowerCluster, environment: &Environment) -> NetworkPolicy {
    let spec = &cluster.spec.network_policy;
    let mut egress = workload_egress(cluster);
    let api_ports = if spec.api_server_ports.is_empty() {
        API_SERVER_PORTS.to_vec()
    } else {
        spec.api_server_ports.clone()
    };
    egress.push(egress_rule(
        api_ports.into_iter().map(tcp).collect(),
        &spec.api_server_cidrs,
    ));
    policy(
        cluster,
        "ingester",
        ingester::COMPONENT,
        metrics_ingress(cluster, environment).into_iter().collect(),
        egress,
    )
}

fn policy(
    cluster: &LotusFollowerCluster,
    role: &str,
    component: &str,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: child_metadata(cluster, role, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// The metrics port, from the operator's namespace and the monitoring ones
/// only; no rule at all when there is none to allow (an `In` needs values, and
/// a rule without `from` would let everyone in).
fn metrics_ingress(
    cluster: &LotusFollowerCluster,
    environment: &Environment,
) -> Option<NetworkPolicyIngressRule> {
    let namespaces: BTreeSet<String> = environment
        .operator_namespace
        .iter()
        .chain(&cluster.spec.network_policy.metrics_namespaces)
        .cloned()
        .collect();
    (!namespaces.is_empty()).then(|| NetworkPolicyIngressRule {
        ports: Some(vec![tcp(METRICS_PORT)]),
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(namespaces.into_iter().collect()),
                }]),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
    })
}

/// What both workloads dial: the database, the leader, DNS.
fn workload_egress(cluster: &LotusFollowerCluster) -> Vec<NetworkPolicyEgressRule> {
    let spec = &cluster.spec.network_policy;
    let database_ports: BTreeSet<i32> = cluster
        .spec
        .database
        .external
        .iter()
        .flat_map(|database| &database.contact_points)
        .map(|point| host_port(point).unwrap_or(CQL_PORT))
        .collect();
    let leader_ports: BTreeSet<i32> = cluster
        .spec
        .leader
        .external
        .iter()
        .filter_map(|leader| url_port(&leader.url))
        .collect();
    vec![
        egress_rule(
            database_ports.into_iter().map(tcp).collect(),
            &spec.database_cidrs,
        ),
        egress_rule(
            leader_ports.into_iter().map(tcp).collect(),
            &spec.leader_cidrs,
        ),
        NetworkPolicyEgressRule {
            ports: Some(vec![port("UDP", DNS_PORT), tcp(DNS_PORT)]),
            to: None,
        },
    ]
}

fn egress_rule(ports: Vec<NetworkPolicyPort>, cidrs: &[String]) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        ports: Some(ports),
        to: (!cidrs.is_empty()).then(|| {
            cidrs
                .iter()
                .map(|cidr| NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: cidr.clone(),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                })
                .collect()
        }),
    }
}

fn tcp(number: i32) -> NetworkPolicyPort {
    port("TCP", number)
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

/// The port of `host:port` (`[v6]:port` too); `None` without one.
fn host_port(address: &str) -> Option<i32> {
    let (host, port) = address.rsplit_once(':')?;
    if host.contains(':') && !host.ends_with(']') {
        return None; // a bare IPv6 address
    }
    port.parse().ok()
}

/// The port a URL dials: its own, or its scheme's.
fn url_port(url: &str) -> Option<i32> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host_port(authority).or(match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn ports(rule_ports: &Option<Vec<NetworkPolicyPort>>) -> Vec<(String, i32)> {
        rule_ports
            .iter()
            .flatten()
            .map(|p| {
                let number = match p.port {
                    Some(IntOrString::Int(n)) => n,
                    _ => 0,
                };
                (p.protocol.clone().unwrap_or_default(), number)
            })
            .collect()
    }

    #[test]
    fn followers_take_rpc_from_anyone_and_metrics_from_monitoring_only() -> anyhow::Result<()> {
        let mut cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        cluster.spec.network_policy.metrics_namespaces = vec!["monitoring".into()];
        let environment = Environment {
            operator_namespace: Some("lotus-follower-system".into()),
            ..Environment::default()
        };
        let [followers, ingester] =
            <[NetworkPolicy; 2]>::try_from(policies(&cluster, &environment))
                .map_err(|p| anyhow::anyhow!("{} policies", p.len()))?;
        let spec = followers.spec.expect("a spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(selector_labels(&cluster, followers::COMPONENT))
        );
        let ingress = spec.ingress.unwrap_or_default();
        assert_eq!(ports(&ingress[0].ports), [("TCP".into(), RPC_PORT)]);
        assert_eq!(ingress[0].from, None, "RPC from any client");
        assert_eq!(ports(&ingress[1].ports), [("TCP".into(), METRICS_PORT)]);
        let selector = ingress[1].from.as_ref().expect("a peer")[0]
            .namespace_selector
            .clone()
            .and_then(|s| s.match_expressions)
            .expect("by namespace name");
        assert_eq!(
            selector[0].values,
            Some(vec!["lotus-follower-system".into(), "monitoring".into()])
        );
        // Egress: the database's port from its contact point, the leader's from its URL, DNS.
        let egress = spec.egress.unwrap_or_default();
        assert_eq!(ports(&egress[0].ports), [("TCP".into(), 9042)]);
        assert_eq!(ports(&egress[1].ports), [("TCP".into(), 1234)]);
        assert_eq!(
            ports(&egress[2].ports),
            [("UDP".into(), 53), ("TCP".into(), 53)]
        );
        // The ingester also reaches the API server, and takes no RPC.
        let spec = ingester.spec.expect("a spec");
        assert_eq!(spec.ingress.unwrap_or_default().len(), 1);
        let egress = spec.egress.unwrap_or_default();
        assert_eq!(
            ports(&egress[3].ports),
            [("TCP".into(), 443), ("TCP".into(), 6443)]
        );
        assert_eq!(egress[3].to, None);
        Ok(())
    }

    #[test]
    fn cidrs_narrow_egress_and_off_means_none() -> anyhow::Result<()> {
        let mut cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        cluster.spec.network_policy.database_cidrs = vec!["10.0.5.0/24".into()];
        let policies = policies(&cluster, &Environment::default());
        let egress = policies[0]
            .spec
            .clone()
            .and_then(|s| s.egress)
            .unwrap_or_default();
        let to = egress[0].to.clone().unwrap_or_default();
        assert_eq!(
            to[0].ip_block.as_ref().map(|b| b.cidr.as_str()),
            Some("10.0.5.0/24")
        );
        assert_eq!(egress[1].to, None, "the leader anywhere");
        cluster.spec.network_policy.enabled = false;
        assert!(super::policies(&cluster, &Environment::default()).is_empty());
        Ok(())
    }

    #[test]
    fn ports_come_from_addresses_and_schemes() {
        assert_eq!(host_port("yb-tserver.db.svc:9042"), Some(9042));
        assert_eq!(host_port("[fd00::1]:9043"), Some(9043));
        assert_eq!(host_port("fd00::1"), None);
        assert_eq!(host_port("db"), None);
        assert_eq!(url_port("https://lotus.lotus.svc/rpc/v1"), Some(443));
        assert_eq!(url_port("ws://user:pw@lotus:2345/rpc/v1"), Some(2345));
        assert_eq!(url_port("http://lotus"), Some(80));
    }
}
