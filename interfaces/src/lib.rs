//! What the operator and the `lotus-follower` binary must agree on, in one
//! place both build against: a rename here is a compile error in whichever side
//! lags, not a fleet whose pods reject their arguments or whose status never
//! moves. DESIGN.md ("Fixed interfaces") describes each.

/// The annotations the ingester keeps on its Lease and the operator's status reads.
pub mod lease {
    /// The height of the head the ingester last wrote.
    pub const HEAD_HEIGHT: &str = "lotus-follower.io/head-height";
    /// That head's timestamp, RFC 3339.
    pub const HEAD_TIME: &str = "lotus-follower.io/head-time";
    /// `ok`, or the last error reaching the leader (short).
    pub const LEADER: &str = "lotus-follower.io/leader";
    /// `ok`, or the last error writing the store (short).
    pub const STORE: &str = "lotus-follower.io/store";
    /// The value of [`LEADER`] and [`STORE`] when all is well.
    pub const OK: &str = "ok";
    /// Every annotation above: a Lease change outside them (a renewal) changes no status.
    pub const ANNOTATIONS: [&str; 4] = [HEAD_HEIGHT, HEAD_TIME, LEADER, STORE];
}

/// The ports the operator's pod specs and Services name.
pub mod ports {
    /// JSON-RPC (`/rpc/v0`, `/rpc/v1`) and health, as Lotus.
    pub const RPC: u16 = 1234;
    /// Prometheus `/metrics` when `--metrics-listen` is given.
    pub const METRICS: u16 = 9091;
}

/// The images of this release.
pub mod images {
    /// `lotus-follower`: followers, ingester, devnet.
    pub const FOLLOWER: &str = concat!(
        "ghcr.io/lotus-follower/lotus-follower:",
        env!("CARGO_PKG_VERSION")
    );
    /// `lotus-follower-operator`.
    pub const OPERATOR: &str = concat!(
        "ghcr.io/lotus-follower/lotus-follower-operator:",
        env!("CARGO_PKG_VERSION")
    );
}

/// Metric names the HPA, dashboards and alerts use.
pub mod metrics {
    pub const HEAD_HEIGHT: &str = "lotus_follower_head_height";
    pub const HEAD_LAG_SECONDS: &str = "lotus_follower_head_lag_seconds";
    pub const RPC_REQUESTS_TOTAL: &str = "lotus_follower_rpc_requests_total";
    pub const RPC_REQUEST_DURATION_SECONDS: &str = "lotus_follower_rpc_request_duration_seconds";
    pub const CACHE_HITS_TOTAL: &str = "lotus_follower_cache_hits_total";
    pub const CACHE_MISSES_TOTAL: &str = "lotus_follower_cache_misses_total";
    pub const INGEST_TIPSETS_TOTAL: &str = "lotus_follower_ingest_tipsets_total";
    pub const INGEST_OBJECTS_TOTAL: &str = "lotus_follower_ingest_objects_total";
    pub const LEADER_CONNECTED: &str = "lotus_follower_leader_connected";
    /// The per-pod rate of [`RPC_REQUESTS_TOTAL`] in `custom.metrics.k8s.io`,
    /// the HPA's Pods metric.
    pub const RPC_REQUESTS_PER_SECOND: &str = "lotus_follower_rpc_requests_per_second";
}

/// The `lotus-follower` subcommands the operator runs.
pub mod commands {
    pub const SERVE: &str = "serve";
    pub const INGEST: &str = "ingest";
}

/// A command-line flag and the environment variable that sets it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// Without the leading `--`, as clap's `long` takes it.
    pub name: &'static str,
    pub env: &'static str,
}

impl Flag {
    /// `--<name>`, as it goes into a pod's arguments.
    pub fn arg(self) -> String {
        format!("--{}", self.name)
    }
}

/// The flags the operator passes (each also read from `LOTUS_FOLLOWER_<FLAG>`).
pub mod flags {
    use super::Flag;

    macro_rules! flags {
        ($($constant:ident = $name:literal),* $(,)?) => {
            $(pub const $constant: Flag = Flag {
                name: $name,
                env: concat!("LOTUS_FOLLOWER_", stringify!($constant)),
            };)*
        };
    }

    flags! {
        STORE = "store",
        NETWORK = "network",
        LISTEN = "listen",
        METRICS_LISTEN = "metrics-listen",
        CQL_USERNAME = "cql-username",
        CQL_PASSWORD_FILE = "cql-password-file",
        CQL_LOCAL_DC = "cql-local-dc",
        CQL_TLS_CA_FILE = "cql-tls-ca-file",
        LEADER = "leader",
        LEADER_TOKEN_FILE = "leader-token-file",
        FORWARD = "forward",
        CACHE_SIZE = "cache-size",
        MAX_BODY_BYTES = "max-body-bytes",
        MAX_BATCH = "max-batch",
        MAX_JSON_DEPTH = "max-json-depth",
        MAX_SUBSCRIPTIONS = "max-subscriptions",
        MAX_LOOKBACK_EPOCHS = "max-lookback-epochs",
        LEASE = "lease",
        MAX_GAP = "max-gap",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_reads_the_environment_variable_of_its_name() {
        for flag in [
            flags::METRICS_LISTEN,
            flags::CQL_TLS_CA_FILE,
            flags::MAX_GAP,
        ] {
            let expected = format!(
                "LOTUS_FOLLOWER_{}",
                flag.name.to_uppercase().replace('-', "_")
            );
            assert_eq!(flag.env, expected);
            assert_eq!(flag.arg(), format!("--{}", flag.name));
        }
    }
}
