//! The `LotusFollowerCluster` resource (group `lotus-follower.io`, version
//! `v1alpha1`, short name `lfc`). Doc comments become `kubectl explain`; the CEL
//! rules make the API server refuse what the operator could never reconcile.
//! Lists that CEL rules walk carry `maxItems` so the rules' cost stays bounded.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        autoscaling::v2::HorizontalPodAutoscalerBehavior,
        core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration},
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A fleet of Lotus followers: a leader that syncs the chain, a shared database
/// holding it, one ingester copying the chain into the database, and autoscaled
/// stateless followers answering Lotus JSON-RPC from it behind one Service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lotus-follower.io",
    version = "v1alpha1",
    kind = "LotusFollowerCluster",
    plural = "lotusfollowerclusters",
    shortname = "lfc",
    namespaced,
    status = "LotusFollowerClusterStatus",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Followers", "type": "string", "jsonPath": ".status.followers"}"#,
    printcolumn = r#"{"name": "Head", "type": "integer", "jsonPath": ".status.headHeight"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LotusFollowerClusterSpec {
    /// The Filecoin network the fleet follows: mainnet, calibnet or devnet. Immutable: a
    /// database holds one network's chain.
    #[x_kube(validation = Rule::new("self == oldSelf").message("network is immutable"))]
    pub network: NetworkName,
    /// The database holding the chain data and indices.
    pub database: DatabaseSpec,
    /// The Lotus node the ingester follows and allowlisted calls are forwarded to.
    pub leader: LeaderSpec,
    /// The ingester: the only writer of the database.
    #[serde(default)]
    pub ingester: IngesterSpec,
    /// The followers answering JSON-RPC.
    #[serde(default)]
    pub followers: FollowersSpec,
    /// When true, the operator changes nothing in the fleet but keeps its status current.
    #[serde(default)]
    pub paused: bool,
    /// The NetworkPolicies guarding the fleet's pods (on unless switched off).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

/// A Filecoin network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    Mainnet,
    Calibnet,
    Devnet,
}

/// Where chain data lives. Exactly one kind; the kind is immutable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external)").message("database.external is required"))]
#[x_kube(validation = Rule::new("has(self.external) == has(oldSelf.external)").message("the database kind is immutable"))]
pub struct DatabaseSpec {
    /// A YugabyteDB (YCQL) or Cassandra-compatible database run elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
}

/// A CQL database the operator does not manage. When it has authentication, the
/// ingester (reads and writes) and the followers (SELECT only) log in as separate
/// roles from separate Secrets; neither is ever defaulted to the other.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.ingesterCredentials) == has(self.followerCredentials)")
    .message("give both ingesterCredentials and followerCredentials (separate roles), or neither"))]
#[x_kube(validation = Rule::new("!has(self.ingesterCredentials) || self.ingesterCredentials.secretName != self.followerCredentials.secretName")
    .message("followerCredentials must be a different Secret from ingesterCredentials: followers may only SELECT"))]
pub struct ExternalDatabase {
    /// CQL contact points, `host:port`.
    #[schemars(length(min = 1, max = 16))]
    pub contact_points: Vec<String>,
    /// The keyspace holding the chain.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,47}$"))]
    pub keyspace: String,
    /// The local datacenter, for the driver's load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_datacenter: Option<String>,
    /// The CA certificate to verify the database's TLS certificate; plaintext when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<SecretKeySelector>,
    /// The ingester's login (its role reads and writes the keyspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingester_credentials: Option<CredentialsSecret>,
    /// The followers' login (their role may only SELECT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follower_credentials: Option<CredentialsSecret>,
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A username and password held in one Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecret {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The key holding the username (default `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// The key holding the password (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// The Lotus node to follow. Exactly one kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external)").message("leader.external is required"))]
pub struct LeaderSpec {
    /// A Lotus node run elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalLeader>,
}

/// A Lotus node the operator does not manage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalLeader {
    /// Its JSON-RPC URL, e.g. `http://lotus.lotus.svc:1234/rpc/v1` (the websocket URL is derived).
    #[schemars(regex(pattern = r"^(http|https|ws|wss)://[^\s]+$"), length(max = 2048))]
    pub url: String,
    /// A JWT for the leader, needed to forward writes such as MpoolPush.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeySelector>,
}

/// The ingester: follows the leader and writes the database (one active at a time).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngesterSpec {
    /// The `lotus-follower` image (default: the operator's own version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How old the head may be (now − its timestamp) before `HeadInSync` turns False,
    /// as a duration such as `120s` or `5m` (default `120s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub max_head_age: Option<String>,
    /// The largest gap, in epochs, the ingester follows across; beyond it, bootstrap by import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_gap: Option<i64>,
    /// Compute resources of the ingester's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra arguments for `lotus-follower ingest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_env: Vec<EnvVar>,
    /// Where the ingester's pod runs and the annotations it carries.
    #[serde(flatten)]
    pub placement: PodPlacement,
}

/// The followers: stateless, read-only JSON-RPC servers behind one Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || !has(self.autoscaling.targetCPUUtilizationPercentage) || \
     (has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)"
).message("a CPU autoscaling target needs followers.resources.requests.cpu"))]
pub struct FollowersSpec {
    /// The `lotus-follower` image (default: the operator's own version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How many followers run when autoscaling is off (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Scale the followers on their RPC load or CPU (an `autoscaling/v2` HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Compute resources of each follower's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The RPC Service in front of the followers.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Methods forwarded to the leader (default: the allowlist of METHODS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub forward: Option<Vec<String>>,
    /// Request limits.
    #[serde(default)]
    pub limits: RpcLimits,
    /// Each follower's in-process cache, as a quantity such as `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// Extra arguments for `lotus-follower serve`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_env: Vec<EnvVar>,
    /// Where the followers' pods run and the annotations they carry.
    #[serde(flatten)]
    pub placement: PodPlacement,
}

/// The fleet's NetworkPolicies, `<name>-followers` and `<name>-ingester`: the
/// followers' RPC port is open to clients; the metrics ports only to the
/// operator's namespace and `metricsNamespaces`; the pods reach out only to the
/// database's and the leader's ports, DNS and (the ingester, for its Lease) the
/// API server. A policy cannot name a Service, so egress is by port, narrowed
/// to addresses where the CIDR lists give them. Enforced only where the
/// cluster's network plugin enforces NetworkPolicies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Whether the operator creates the policies (default true); false deletes the ones it made.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Namespaces, besides the operator's own, whose pods may scrape the metrics
    /// ports (your Prometheus's, for example). At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub metrics_namespaces: Vec<String>,
    /// Where the database is, as CIDRs (`10.0.5.0/24`): egress to its ports goes
    /// only there. Any address when empty. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub database_cidrs: Vec<String>,
    /// Where the leader is, as CIDRs; any address when empty. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub leader_cidrs: Vec<String>,
    /// Where the API server is, as CIDRs; any address when empty. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub api_server_cidrs: Vec<String>,
    /// The API server's ports as pods reach them: policies see the endpoint
    /// behind the `kubernetes` Service, not the Service's 443 (default 443 and 6443).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub api_server_ports: Vec<i32>,
}

fn enabled() -> bool {
    true
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics_namespaces: Vec::new(),
            database_cidrs: Vec::new(),
            leader_cidrs: Vec::new(),
            api_server_cidrs: Vec::new(),
            api_server_ports: Vec::new(),
        }
    }
}

/// The prefix of the pod annotations the operator keeps for itself: users'
/// `podAnnotations` under it are refused, so no key the operator sets later can
/// ever collide with one a resource already uses.
pub const RESERVED_ANNOTATION_PREFIX: &str = "lotus-follower.io/";

/// Where a component's pods are scheduled, as in a pod spec, and the annotations
/// on its pod template. Passed to the pods as given; the bounds keep the schema's
/// CEL cost estimate finite and a spec reviewable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPlacement {
    /// Node labels a node must have for the pods to run there (the pod spec's
    /// `nodeSelector`), e.g. `{node-pool: rpc}`. At most 32 labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (the pod spec's `tolerations`), e.g. the taint of
    /// a dedicated node pool. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Node affinity, pod affinity and pod anti-affinity (the pod spec's
    /// `affinity`), passed as given. For the followers, the operator's own soft
    /// spread across nodes (a topology spread constraint on
    /// `kubernetes.io/hostname`, not an affinity) stays beside it and counts only
    /// the nodes this affinity, the node selector and the tolerations allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Annotations on the pod template (e.g. for a cluster autoscaler or a mesh).
    /// Keys under `lotus-follower.io/` are the operator's and refused. At most 32.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(key, !key.startsWith('lotus-follower.io/'))")
        .message("podAnnotations under lotus-follower.io/ are reserved for the operator"))]
    pub pod_annotations: BTreeMap<String, String>,
}

/// Autoscaling of the followers: on the per-pod RPC rate
/// (`lotus_follower_rpc_requests_per_second`), on CPU, or both.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetRequestsPerSecond) || has(self.targetCPUUtilizationPercentage)")
    .message("give targetRequestsPerSecond, targetCPUUtilizationPercentage or both"))]
pub struct AutoscalingSpec {
    /// The fewest followers (at least 1).
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most followers.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target JSON-RPC requests per second per follower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_requests_per_second: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// Target average CPU utilisation, in percent of the requested CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Scaling behaviour, passed to the HPA as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// The Service `<name>-rpc`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// The Service's port (default 1234).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Annotations for the Service (load balancer settings and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Request limits of each follower; each is answered with a JSON-RPC error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RpcLimits {
    /// Largest request body, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_body_bytes: Option<i64>,
    /// Most calls in one batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch: Option<i32>,
    /// Deepest JSON nesting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4))]
    pub max_json_depth: Option<i32>,
    /// Most ChainNotify subscriptions per websocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_subscriptions: Option<i32>,
    /// How far below the head requests may reach, in epochs (default 2880).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_lookback_epochs: Option<i64>,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LotusFollowerClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Syncing, Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready, DatabaseReady, LeaderReady, IngesterReady, FollowersReady, HeadInSync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The height of the head the ingester last published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_height: Option<i64>,
    /// Ready followers over desired, as `ready/desired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<String>,
    /// The RPC endpoint inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::Value;

    use super::*;

    /// The properties of `spec.<component>` in the generated CRD.
    fn component_fields(component: &str) -> anyhow::Result<Value> {
        let crd = serde_json::to_value(LotusFollowerCluster::crd())?;
        Ok(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"][component]["properties"]
            .clone())
    }

    #[test]
    fn pod_placement_is_bounded_and_described_for_both_components() -> anyhow::Result<()> {
        for component in ["ingester", "followers"] {
            let fields = component_fields(component)?;
            for name in ["nodeSelector", "tolerations", "affinity", "podAnnotations"] {
                let description = fields[name]["description"].as_str().unwrap_or_default();
                assert!(
                    !description.is_empty(),
                    "{component}.{name} has a description for kubectl explain"
                );
            }
            // Bounded, so CEL rules over them have a finite cost estimate.
            assert_eq!(fields["tolerations"]["maxItems"], 32, "{component}");
            assert_eq!(fields["nodeSelector"]["maxProperties"], 32, "{component}");
            assert_eq!(fields["podAnnotations"]["maxProperties"], 32, "{component}");
            // Kubernetes' own descriptions of its types reach kubectl explain too.
            assert!(
                fields["tolerations"]["items"]["properties"]["tolerationSeconds"]["description"]
                    .is_string()
            );
            assert!(fields["affinity"]["properties"]["podAntiAffinity"]["description"].is_string());
            let rules = fields["podAnnotations"]["x-kubernetes-validations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(rules.len(), 1, "{component}");
            assert!(
                rules[0]["rule"]
                    .as_str()
                    .is_some_and(|rule| rule.contains(RESERVED_ANNOTATION_PREFIX)),
                "{rules:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_resource_without_placement_reads_and_writes_back_unchanged() -> anyhow::Result<()> {
        let yaml = include_str!("build/fixtures/minimal.yaml");
        let cluster: LotusFollowerCluster = serde_yaml::from_str(yaml)?;
        assert_eq!(cluster.spec.followers.placement, PodPlacement::default());
        let written = serde_json::to_value(&cluster.spec.followers)?;
        for name in ["nodeSelector", "tolerations", "affinity", "podAnnotations"] {
            assert!(
                written.get(name).is_none(),
                "{name} is not written when unset"
            );
        }
        Ok(())
    }
}
