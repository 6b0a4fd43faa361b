//! The followers' Deployment: `lotus-follower serve` with the fixed flags of
//! DESIGN.md, restricted security context, probes on the health endpoints, spread
//! across nodes. With autoscaling on, `replicas` is left to the HPA.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
            SecurityContext, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;
use lotus_follower_interfaces::{commands, flags, ports};

use super::{
    common::{DEFAULT_IMAGE, child_metadata, labels, selector_labels},
    placement::{place, pod_annotations},
};
use crate::crd::{CredentialsSecret, LotusFollowerCluster, NetworkName};

pub const COMPONENT: &str = "follower";
pub const RPC_PORT: i32 = ports::RPC as i32;
pub const METRICS_PORT: i32 = ports::METRICS as i32;
/// How long a stopping follower keeps serving before it is told to stop: long
/// enough for the EndpointSlice controller and every node's kube-proxy to take
/// it out of the Service, so no new request reaches a closed listener.
pub const DRAIN_SECONDS: i64 = 5;
/// How long `serve` lets calls in flight finish after SIGTERM (its
/// `--shutdown-timeout` default); the grace period covers drain + this + slack.
pub const SHUTDOWN_SECONDS: i64 = 10;
pub const TERMINATION_GRACE_SECONDS: i64 = DRAIN_SECONDS + SHUTDOWN_SECONDS + 5;

/// A Kubernetes quantity in whole bytes (rounded up, as the kubelet does),
/// parsed by the same crate as the follower's `--cache-size`.
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let parsed = kube_quantity::ParsedQuantity::try_from(quantity.trim()).ok()?;
    let bytes = parsed.to_bytes_f64()?.ceil();
    // Exact in an f64 up to 2^53 bytes (8 PiB), far above any cache.
    (bytes.is_finite() && (0.0..=(1u64 << 53) as f64).contains(&bytes)).then_some(bytes as u64)
}
/// Replicas when the resource gives none and autoscaling is off.
pub const DEFAULT_REPLICAS: i32 = 2;
/// The unprivileged user the container runs as.
const RUN_AS: i64 = 65532;

const DB_CREDENTIALS_DIR: &str = "/etc/lotus-follower/db-credentials";
const DB_CA_DIR: &str = "/etc/lotus-follower/db-ca";
const LEADER_TOKEN_DIR: &str = "/etc/lotus-follower/leader-token";

fn network_flag(network: NetworkName) -> &'static str {
    match network {
        NetworkName::Mainnet => "mainnet",
        NetworkName::Calibnet => "calibnet",
        NetworkName::Devnet => "devnet",
    }
}

fn secret_volume(name: &str, secret: &str, key: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: key.to_owned(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The flags, environment and volumes that connect a process to the database
/// and the leader; the ingester uses its own credentials with the same shape.
#[derive(Debug)]
pub struct Connection {
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

/// Which database role a process logs in as: the ingester's reads and writes, the
/// followers' may only SELECT. Their Secrets are separate and never substituted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseRole {
    Ingester,
    Follower,
}

pub fn connection(cluster: &LotusFollowerCluster, role: DatabaseRole) -> Connection {
    let spec = &cluster.spec;
    let credentials: Option<&CredentialsSecret> =
        spec.database
            .external
            .as_ref()
            .and_then(|database| match role {
                DatabaseRole::Ingester => database.ingester_credentials.as_ref(),
                DatabaseRole::Follower => database.follower_credentials.as_ref(),
            });
    let mut connection = Connection {
        args: vec![flags::NETWORK.arg(), network_flag(spec.network).into()],
        env: Vec::new(),
        volumes: Vec::new(),
        mounts: Vec::new(),
    };
    if let Some(database) = &spec.database.external {
        connection.args.push(flags::STORE.arg());
        connection.args.push(format!(
            "cql://{}/{}",
            database.contact_points.join(","),
            database.keyspace
        ));
        if let Some(dc) = &database.local_datacenter {
            connection
                .args
                .extend([flags::CQL_LOCAL_DC.arg(), dc.clone()]);
        }
        if let Some(ca) = &database.tls_ca {
            connection
                .volumes
                .push(secret_volume("db-ca", &ca.name, &ca.key));
            connection.mounts.push(mount("db-ca", DB_CA_DIR));
            connection.args.extend([
                flags::CQL_TLS_CA_FILE.arg(),
                format!("{DB_CA_DIR}/{}", ca.key),
            ]);
        }
    }
    if let Some(credentials) = credentials {
        let username_key = credentials
            .username_key
            .clone()
            .unwrap_or_else(|| "username".into());
        let password_key = credentials
            .password_key
            .clone()
            .unwrap_or_else(|| "password".into());
        // The username by reference, the password as a file: neither in the arguments.
        connection.env.push(EnvVar {
            name: flags::CQL_USERNAME.env.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: credentials.secret_name.clone(),
                    key: username_key,
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
        connection.volumes.push(secret_volume(
            "db-credentials",
            &credentials.secret_name,
            &password_key,
        ));
        connection
            .mounts
            .push(mount("db-credentials", DB_CREDENTIALS_DIR));
        connection.args.extend([
            flags::CQL_PASSWORD_FILE.arg(),
            format!("{DB_CREDENTIALS_DIR}/{password_key}"),
        ]);
    }
    if let Some(leader) = &spec.leader.external {
        connection
            .args
            .extend([flags::LEADER.arg(), leader.url.clone()]);
        if let Some(token) = &leader.token {
            connection
                .volumes
                .push(secret_volume("leader-token", &token.name, &token.key));
            connection
                .mounts
                .push(mount("leader-token", LEADER_TOKEN_DIR));
            connection.args.extend([
                flags::LEADER_TOKEN_FILE.arg(),
                format!("{LEADER_TOKEN_DIR}/{}", token.key),
            ]);
        }
    }
    connection
}

/// Adds a scratch `/tmp`: the root filesystem is read-only.
pub fn with_scratch_tmp(
    mut volumes: Vec<Volume>,
    mut mounts: Vec<VolumeMount>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    });
    (volumes, mounts)
}

/// Non-root, no privilege escalation, no capabilities, read-only root filesystem.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("rpc".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Followers spread over nodes, softly: a spread the cluster cannot satisfy
/// (fewer nodes than followers, a small dedicated pool) must never leave a
/// follower unscheduled. It is a topology spread constraint rather than an
/// anti-affinity so that it composes with the resource's own `affinity`: the
/// scheduler applies both. Skew is counted only over nodes the pods may run on
/// — those the node selector and node affinity allow (`nodeAffinityPolicy`) and
/// whose taints they tolerate (`nodeTaintsPolicy`) — so with a dedicated pool
/// the followers spread across that pool, not across nodes they never reach.
fn hostname_spread(selector: BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector),
            ..LabelSelector::default()
        }),
        node_affinity_policy: Some("Honor".into()),
        node_taints_policy: Some("Honor".into()),
        ..TopologySpreadConstraint::default()
    }
}

pub fn deployment(cluster: &LotusFollowerCluster) -> Deployment {
    let followers = &cluster.spec.followers;
    let connection = connection(cluster, DatabaseRole::Follower);
    let mut args = vec![
        commands::SERVE.to_owned(),
        flags::LISTEN.arg(),
        format!("0.0.0.0:{RPC_PORT}"),
        flags::METRICS_LISTEN.arg(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ];
    args.extend(connection.args);
    if let Some(forward) = &followers.forward {
        args.extend([flags::FORWARD.arg(), forward.join(",")]);
    }
    if let Some(cache) = &followers.cache_size {
        // In bytes: the pod gets a plain number whatever form of quantity the
        // spec used (`1.5Gi`, `1e9`). One that does not parse is passed as
        // written, for the follower to refuse with its reason.
        let bytes = quantity_bytes(&cache.0).map_or_else(|| cache.0.clone(), |b| b.to_string());
        args.extend([flags::CACHE_SIZE.arg(), bytes]);
    }
    let limits = &followers.limits;
    let limit_flags = [
        (flags::MAX_BODY_BYTES, limits.max_body_bytes),
        (flags::MAX_BATCH, limits.max_batch.map(i64::from)),
        (flags::MAX_JSON_DEPTH, limits.max_json_depth.map(i64::from)),
        (
            flags::MAX_SUBSCRIPTIONS,
            limits.max_subscriptions.map(i64::from),
        ),
        (flags::MAX_LOOKBACK_EPOCHS, limits.max_lookback_epochs),
    ];
    for (flag, value) in limit_flags {
        if let Some(value) = value {
            args.extend([flag.arg(), value.to_string()]);
        }
    }
    args.extend(followers.extra_args.iter().cloned());
    let mut env = connection.env;
    env.extend(followers.extra_env.iter().cloned());
    let (volumes, mounts) = with_scratch_tmp(connection.volumes, connection.mounts);

    let container = Container {
        name: "follower".into(),
        image: Some(
            followers
                .image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        ),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("rpc".into()),
                container_port: RPC_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/health/readyz", 5)),
        liveness_probe: Some(probe("/health/livez", 10)),
        // The image has no shell: the kubelet's own sleep action.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: DRAIN_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: followers.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let selector = selector_labels(cluster, COMPONENT);
    let mut pod = PodSpec {
        containers: vec![container],
        // Followers never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(restricted_pod_security()),
        topology_spread_constraints: Some(vec![hostname_spread(selector.clone())]),
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    place(&mut pod, &followers.placement);
    Deployment {
        metadata: child_metadata(cluster, "followers", COMPONENT),
        spec: Some(DeploymentSpec {
            // Left to the HPA when autoscaling is on (the hand-over happens in apply).
            replicas: followers
                .autoscaling
                .is_none()
                .then(|| followers.replicas.unwrap_or(DEFAULT_REPLICAS)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cluster, COMPONENT)),
                    annotations: pod_annotations(&followers.placement, BTreeMap::new()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn container(deployment: &Deployment) -> &Container {
        &deployment
            .spec
            .as_ref()
            .expect("a spec")
            .template
            .spec
            .as_ref()
            .expect("a pod spec")
            .containers[0]
    }

    fn args(deployment: &Deployment) -> Vec<String> {
        container(deployment).args.clone().unwrap_or_default()
    }

    fn flag(args: &[String], name: &str) -> Option<String> {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|i| args.get(i + 1).cloned())
    }

    #[test]
    fn minimal_resource_builds_a_restricted_follower_deployment() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let deployment = deployment(&cluster);
        assert_eq!(deployment.metadata.name.as_deref(), Some("demo-followers"));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("fleet"));
        let owner = &deployment
            .metadata
            .owner_references
            .as_ref()
            .expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("LotusFollowerCluster", "0000-uid", Some(true))
        );
        let spec = deployment.spec.as_ref().expect("a spec");
        assert_eq!(spec.replicas, Some(2));
        let args = args(&deployment);
        assert_eq!(args[0], "serve");
        assert_eq!(
            flag(&args, "--store").as_deref(),
            Some("cql://yb-tserver.db.svc:9042/lotus_calibnet")
        );
        assert_eq!(flag(&args, "--network").as_deref(), Some("calibnet"));
        assert_eq!(flag(&args, "--listen").as_deref(), Some("0.0.0.0:1234"));
        assert_eq!(
            flag(&args, "--metrics-listen").as_deref(),
            Some("0.0.0.0:9091")
        );
        assert_eq!(
            flag(&args, "--leader").as_deref(),
            Some("http://lotus.lotus.svc:1234/rpc/v1")
        );
        let security = container(&deployment)
            .security_context
            .as_ref()
            .expect("a security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let pod = spec.template.spec.as_ref().expect("a pod spec");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            container(&deployment)
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.path.as_deref()),
            Some("/health/readyz")
        );
        Ok(())
    }

    #[test]
    fn a_stopping_follower_drains_before_its_grace_period_ends() -> anyhow::Result<()> {
        let deployment = deployment(&fixture(include_str!("fixtures/minimal.yaml"))?);
        let drain = container(&deployment)
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds);
        assert_eq!(drain, Some(DRAIN_SECONDS));
        let grace = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.termination_grace_period_seconds)
            .expect("a grace period");
        // The kubelet kills at the end of the grace period, preStop included.
        assert!(grace > DRAIN_SECONDS + SHUTDOWN_SECONDS, "{grace}");
        Ok(())
    }

    #[test]
    fn cache_size_quantities_become_bytes() {
        // Each form the API server accepts for `cacheSize`; `1.5Gi` used to
        // reach the follower as written and crash-loop it.
        for (quantity, bytes) in [
            ("1.5Gi", 1_610_612_736),
            ("2Ti", 2 << 40),
            ("1e9", 1_000_000_000),
            ("512Mi", 512 << 20),
            ("100M", 100_000_000),
        ] {
            assert_eq!(quantity_bytes(quantity), Some(bytes), "{quantity}");
        }
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn credentials_stay_out_of_the_arguments_and_autoscaling_leaves_replicas_alone()
    -> anyhow::Result<()> {
        let cluster = fixture(include_str!("../../../manifests/examples/external.yaml"))?;
        let deployment = deployment(&cluster);
        assert_eq!(
            deployment.spec.as_ref().and_then(|s| s.replicas),
            None,
            "the HPA owns replicas"
        );
        let args = args(&deployment);
        assert_eq!(
            flag(&args, "--cql-password-file").as_deref(),
            Some("/etc/lotus-follower/db-credentials/password")
        );
        assert_eq!(
            flag(&args, "--leader-token-file").as_deref(),
            Some("/etc/lotus-follower/leader-token/token")
        );
        assert_eq!(
            flag(&args, "--cql-tls-ca-file").as_deref(),
            Some("/etc/lotus-follower/db-ca/ca.crt")
        );
        assert_eq!(
            flag(&args, "--max-lookback-epochs").as_deref(),
            Some("1440")
        );
        assert_eq!(flag(&args, "--cache-size").as_deref(), Some("1073741824"));
        assert!(
            !args
                .iter()
                .any(|arg| arg.contains("follower-secret-password")),
            "no secret in the arguments"
        );
        let env = container(&deployment).env.clone().unwrap_or_default();
        let username = env
            .iter()
            .find(|e| e.name == "LOTUS_FOLLOWER_CQL_USERNAME")
            .expect("the username variable");
        let secret = username
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("from a Secret");
        assert_eq!(
            secret.name, "lotus-db-follower",
            "the followers' own Secret, never the ingester's"
        );
        Ok(())
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("a pod spec")
    }

    #[test]
    fn placement_reaches_the_follower_pods_beside_their_hostname_spread() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/placement.yaml"))?;
        let deployment = deployment(&cluster);
        let pod = pod(&deployment);
        assert_eq!(
            pod.node_selector,
            Some(BTreeMap::from([("node-pool".into(), "rpc".into())]))
        );
        let tolerations = pod.tolerations.clone().unwrap_or_default();
        assert_eq!(tolerations.len(), 2, "both, in order");
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(tolerations[1].toleration_seconds, Some(30));
        let affinity = pod.affinity.as_ref().expect("the resource's affinity");
        assert_eq!(
            Some(affinity),
            cluster.spec.followers.placement.affinity.as_ref(),
            "passed as given"
        );
        // The user's required anti-affinity and the operator's soft spread both apply.
        let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(
            (
                spread[0].node_affinity_policy.as_deref(),
                spread[0].node_taints_policy.as_deref()
            ),
            (Some("Honor"), Some("Honor")),
            "skew counted over the nodes the followers may use"
        );
        let template = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .expect("template metadata");
        assert_eq!(
            template.annotations,
            Some(BTreeMap::from([
                (
                    "cluster-autoscaler.kubernetes.io/safe-to-evict".into(),
                    "true".into()
                ),
                ("example.com/owner".into(), "rpc-team".into()),
            ]))
        );
        assert_eq!(
            template.labels,
            Some(labels(&cluster, COMPONENT)),
            "annotations never touch the labels the selector needs"
        );
        Ok(())
    }

    #[test]
    fn without_placement_the_follower_pods_set_none() -> anyhow::Result<()> {
        let cluster = fixture(include_str!("fixtures/minimal.yaml"))?;
        let deployment = deployment(&cluster);
        let pod = pod(&deployment);
        assert_eq!(
            (&pod.node_selector, &pod.tolerations, &pod.affinity),
            (&None, &None, &None)
        );
        let template = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .expect("template metadata");
        assert_eq!(template.annotations, None);
        assert!(pod.topology_spread_constraints.is_some(), "still spread");
        Ok(())
    }
}
