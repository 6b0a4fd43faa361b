//! The command line (DESIGN.md, "Fixed interfaces"): every subcommand's flags,
//! each also from `LOTUS_FOLLOWER_<FLAG>`. In the library so the operator's
//! tests can check that the arguments it builds parse.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use lotus_follower_interfaces::{commands, flags};

use crate::{
    chain::{Network, upgrades::UpgradeHeight},
    devnet::DevnetOptions,
    rpc::Limits,
    store::{CqlLogin, StoreUrl},
    units::{parse_bytes, parse_bytes_usize, parse_duration},
};

#[derive(Debug, Parser)]
#[command(name = "lotus-follower", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Quick start: a devnet leader, an ingester and a follower answering on
    /// 127.0.0.1:1234, on embedded stores in a temporary directory (removed on exit).
    Dev(DevArgs),
    /// A leader producing a chain, serving Lotus JSON-RPC.
    Devnet(DevnetArgs),
    /// Load chain data from CARv1 files or FRC-0108 snapshots (plain or zstd, file or URL).
    Import(ImportArgs),
    /// Follow the leader and write the store (the single writer).
    #[command(name = commands::INGEST)]
    Ingest(IngestArgs),
    /// Answer Lotus JSON-RPC from the store.
    #[command(name = commands::SERVE)]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long = flags::STORE.name, env = flags::STORE.env)]
    pub store: StoreUrl,
    #[command(flatten)]
    pub cql: CqlArgs,
    /// The leader allowlisted calls are forwarded to (forwarding lands with its
    /// issue; until then forwarded methods answer "method not found").
    #[arg(long = flags::LEADER.name, env = flags::LEADER.env)]
    pub leader: Option<String>,
    /// A file holding a JWT for the leader.
    #[arg(long = flags::LEADER_TOKEN_FILE.name, env = flags::LEADER_TOKEN_FILE.env)]
    pub leader_token_file: Option<std::path::PathBuf>,
    /// Methods forwarded to the leader (comma-separated).
    #[arg(long = flags::FORWARD.name, env = flags::FORWARD.env, value_delimiter = ',')]
    pub forward: Vec<String>,
    /// The chain's network (mainnet, calibnet, devnet): address prefixes and chain ID.
    #[arg(long = flags::NETWORK.name, env = flags::NETWORK.env, default_value = "mainnet")]
    pub network: Network,
    /// The RPC listener: `/rpc/v0`, `/rpc/v1`, `/health/livez`, `/health/readyz`,
    /// and `/debug/metrics` unless `--metrics-listen` is given.
    #[arg(long = flags::LISTEN.name, env = flags::LISTEN.env, default_value = "127.0.0.1:1234")]
    pub listen: SocketAddr,
    /// A separate listener for Prometheus `/metrics` (the pod spec's
    /// `0.0.0.0:9091`); without it, metrics are at `/debug/metrics` on `--listen`.
    #[arg(long = flags::METRICS_LISTEN.name, env = flags::METRICS_LISTEN.env)]
    pub metrics_listen: Option<SocketAddr>,
    /// The in-process block cache: a Kubernetes quantity (`512Mi`, `1.5Gi`, `1e9`).
    #[arg(long = flags::CACHE_SIZE.name, env = flags::CACHE_SIZE.env, default_value = "512Mi", value_parser = parse_bytes)]
    pub cache_size: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How far below the head requests may reach, in epochs.
    #[arg(
        long = flags::MAX_LOOKBACK_EPOCHS.name,
        env = flags::MAX_LOOKBACK_EPOCHS.env,
        default_value_t = 2880
    )]
    pub max_lookback_epochs: i64,
    /// How long StateWaitMsg waits for confirmations, in seconds.
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_WAIT_SECONDS", default_value_t = 300)]
    pub max_wait_seconds: u64,
    /// On SIGTERM or SIGINT: how long calls in flight may finish before they are cut.
    #[arg(long, env = "LOTUS_FOLLOWER_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Sets an upgrade's height, `Name=Height` (e.g. `FireHorse=5500000`), for an
    /// upgrade scheduled after this build; repeatable.
    #[arg(
        long = "upgrade-height",
        env = "LOTUS_FOLLOWER_UPGRADE_HEIGHTS",
        value_delimiter = ','
    )]
    pub upgrade_heights: Vec<UpgradeHeight>,
}

/// The server's limits (DESIGN.md: like lotus-gateway's), each answered with
/// a JSON-RPC error or, for connections, a clean close.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// A request body's size (a quantity: `1Mi`).
    #[arg(long = flags::MAX_BODY_BYTES.name, env = flags::MAX_BODY_BYTES.env, default_value = "1Mi", value_parser = parse_bytes_usize)]
    pub max_body_bytes: usize,
    /// One answer's size, a batch's included (a quantity: `64Mi`).
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_RESPONSE_BYTES", default_value = "64Mi", value_parser = parse_bytes_usize)]
    pub max_response_bytes: usize,
    #[arg(long = flags::MAX_BATCH.name, env = flags::MAX_BATCH.env, default_value_t = 100)]
    pub max_batch: usize,
    #[arg(long = flags::MAX_JSON_DEPTH.name, env = flags::MAX_JSON_DEPTH.env, default_value_t = 32)]
    pub max_json_depth: usize,
    /// ChainNotify channels per websocket.
    #[arg(long = flags::MAX_SUBSCRIPTIONS.name, env = flags::MAX_SUBSCRIPTIONS.env, default_value_t = 16)]
    pub max_subscriptions: usize,
    /// How long one call may take (`30s`); StateWaitMsg is bounded by `--max-wait-seconds`.
    #[arg(long, env = "LOTUS_FOLLOWER_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Calls of one method in flight at once; more are refused with an error.
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_MAX_CONCURRENT_CALLS",
        default_value_t = 256
    )]
    pub max_concurrent_calls: usize,
    /// StateWaitMsg calls waiting at once (a waiting call holds no thread).
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_WAITS", default_value_t = 10_000)]
    pub max_waits: usize,
    /// Open connections; one more is closed at once.
    #[arg(long, env = "LOTUS_FOLLOWER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How often a websocket is pinged.
    #[arg(long, env = "LOTUS_FOLLOWER_WS_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ws_ping_interval: std::time::Duration,
    /// A websocket that sent nothing (not even a pong) for this long is closed.
    #[arg(long, env = "LOTUS_FOLLOWER_WS_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub ws_idle_timeout: std::time::Duration,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch: self.max_batch,
            max_json_depth: self.max_json_depth,
            max_subscriptions: self.max_subscriptions,
            request_timeout: self.request_timeout,
            max_concurrent_calls: self.max_concurrent_calls,
            max_waits: self.max_waits,
            max_connections: self.max_connections,
            max_response_bytes: self.max_response_bytes,
            ws_ping_interval: self.ws_ping_interval,
            ws_idle_timeout: self.ws_idle_timeout,
        }
    }
}

/// The CQL login, for `cql://` stores.
#[derive(Debug, Args)]
pub struct CqlArgs {
    /// The CQL role (the ingester's writes; a follower's may only SELECT).
    #[arg(long = flags::CQL_USERNAME.name, env = flags::CQL_USERNAME.env)]
    pub cql_username: Option<String>,
    /// A file holding the role's password.
    #[arg(long = flags::CQL_PASSWORD_FILE.name, env = flags::CQL_PASSWORD_FILE.env)]
    pub cql_password_file: Option<std::path::PathBuf>,
    /// How long one CQL request may take (`10s`).
    #[arg(long, env = "LOTUS_FOLLOWER_CQL_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub cql_request_timeout: Option<std::time::Duration>,
    /// The datacenter whose nodes are asked first.
    #[arg(long = flags::CQL_LOCAL_DC.name, env = flags::CQL_LOCAL_DC.env)]
    pub cql_local_dc: Option<String>,
    /// The CA certificate (PEM) that signs the database's TLS certificate.
    #[arg(long = flags::CQL_TLS_CA_FILE.name, env = flags::CQL_TLS_CA_FILE.env)]
    pub cql_tls_ca_file: Option<std::path::PathBuf>,
    /// `<reported>=<reachable>`: connect to a node the database reports at
    /// `<reported>` (its `rpc_address`:port) through `<reachable>` instead — for
    /// a database behind NAT, a load balancer or a port forward. Repeatable;
    /// once given, every node must be listed.
    #[arg(
        long = "cql-address-map",
        env = "LOTUS_FOLLOWER_CQL_ADDRESS_MAP",
        value_delimiter = ',',
        value_parser = parse_address_mapping
    )]
    pub cql_address_map: Vec<(SocketAddr, SocketAddr)>,
}

fn parse_address_mapping(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (reported, reachable) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected <reported ip:port>=<reachable ip:port>"))?;
    let parse = |address: &str| {
        address
            .parse::<SocketAddr>()
            .map_err(|error| format!("{address}: {error} (an IP address and port)"))
    };
    Ok((parse(reported)?, parse(reachable)?))
}

impl CqlArgs {
    pub fn login(&self) -> CqlLogin {
        CqlLogin {
            username: self.cql_username.clone(),
            password_file: self.cql_password_file.clone(),
            request_timeout: self.cql_request_timeout,
            local_dc: self.cql_local_dc.clone(),
            tls_ca_file: self.cql_tls_ca_file.clone(),
            address_map: self.cql_address_map.clone(),
        }
    }
}

/// How the devnet's chain grows.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Time between epochs (`30s`, `2m`, or below a second: `200ms`).
    #[arg(long, env = "LOTUS_FOLLOWER_BLOCK_TIME", value_parser = parse_duration)]
    pub block_time: Option<std::time::Duration>,
    /// Actors whose balance and nonce change each epoch.
    #[arg(long, env = "LOTUS_FOLLOWER_STATE_CHURN", default_value_t = 10)]
    pub state_churn: usize,
    /// Every this many tipsets, replace the last `--reorg-depth` with a heavier branch (0: never).
    #[arg(long, env = "LOTUS_FOLLOWER_REORG_EVERY", default_value_t = 0)]
    pub reorg_every: u64,
    #[arg(long, env = "LOTUS_FOLLOWER_REORG_DEPTH", default_value_t = 1)]
    pub reorg_depth: u64,
    /// Derives the accounts' keys; account 0 is left for you to sign with.
    #[arg(long, env = "LOTUS_FOLLOWER_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Write the admin API token here at start (default: print it).
    #[arg(long, env = "LOTUS_FOLLOWER_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The key API tokens are signed with (HS256), so tokens survive restarts and
    /// can be made beforehand: Lotus's keystore `KeyInfo` JSON, `lotus-shed jwt
    /// new`'s hex of it, or raw bytes. Created (0600, 32 random bytes, Lotus's
    /// format) when missing. Default: a new random key at every start.
    #[arg(long, env = "LOTUS_FOLLOWER_API_SECRET_FILE")]
    pub api_secret_file: Option<std::path::PathBuf>,
}

impl ChainArgs {
    pub fn options(&self, default_block_time: std::time::Duration) -> DevnetOptions {
        DevnetOptions {
            seed: self.seed,
            block_time: self.block_time.unwrap_or(default_block_time),
            state_churn: self.state_churn,
            reorg_every: self.reorg_every,
            reorg_depth: self.reorg_depth,
        }
    }
}

#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// `embedded:<dir>`: the devnet's own chain, continued after a restart.
    #[arg(long = flags::STORE.name, env = flags::STORE.env)]
    pub store: StoreUrl,
    #[command(flatten)]
    pub cql: CqlArgs,
    #[arg(long = flags::LISTEN.name, env = flags::LISTEN.env, default_value = "127.0.0.1:1234")]
    pub listen: SocketAddr,
    /// A separate Prometheus listener; without it, `/debug/metrics` on `--listen`.
    #[arg(long = flags::METRICS_LISTEN.name, env = flags::METRICS_LISTEN.env)]
    pub metrics_listen: Option<SocketAddr>,
    /// Reveal a real chain from this CAR (file or URL) one epoch per block
    /// time instead of producing one; `--network` names its network.
    #[arg(long, env = "LOTUS_FOLLOWER_REPLAY")]
    pub replay: Option<String>,
    /// The replayed chain's network (address prefixes, chain ID).
    #[arg(long = flags::NETWORK.name, env = flags::NETWORK.env, default_value = "devnet")]
    pub network: Network,
    #[command(flatten)]
    pub chain: ChainArgs,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The leader's RPC URL, e.g. `http://leader:1234/rpc/v1`.
    #[arg(long = flags::LEADER.name, env = flags::LEADER.env)]
    pub leader: String,
    /// `<namespace>/<name>` of the ingester's Kubernetes Lease: only its holder
    /// writes, and it publishes the head and health there for the operator.
    #[arg(long = flags::LEASE.name, env = flags::LEASE.env)]
    pub lease: Option<String>,
    /// A file holding a JWT for the leader.
    #[arg(long = flags::LEADER_TOKEN_FILE.name, env = flags::LEADER_TOKEN_FILE.env)]
    pub leader_token_file: Option<std::path::PathBuf>,
    #[arg(long = flags::STORE.name, env = flags::STORE.env)]
    pub store: StoreUrl,
    #[command(flatten)]
    pub cql: CqlArgs,
    /// The chain's network (mainnet, calibnet, devnet).
    #[arg(long = flags::NETWORK.name, env = flags::NETWORK.env, default_value = "mainnet")]
    pub network: Network,
    /// Refuse to follow across more epochs than this: bootstrap by `import` instead.
    #[arg(long = flags::MAX_GAP.name, env = flags::MAX_GAP.env, default_value_t = 2880)]
    pub max_gap: i64,
    #[arg(
        long = flags::METRICS_LISTEN.name,
        env = flags::METRICS_LISTEN.env,
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the devnet leader itself answers (push messages there).
    #[arg(
        long,
        env = "LOTUS_FOLLOWER_LEADER_LISTEN",
        default_value = "127.0.0.1:1235"
    )]
    pub leader_listen: SocketAddr,
    #[arg(long = flags::LISTEN.name, env = flags::LISTEN.env, default_value = "127.0.0.1:1234")]
    pub listen: SocketAddr,
    /// A separate Prometheus listener; without it, `/debug/metrics` on `--listen`.
    #[arg(long = flags::METRICS_LISTEN.name, env = flags::METRICS_LISTEN.env)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub chain: ChainArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.
    #[arg(long = flags::STORE.name, env = flags::STORE.env)]
    pub store: StoreUrl,
    #[command(flatten)]
    pub cql: CqlArgs,
    /// The chain's network (mainnet, calibnet, devnet).
    #[arg(long = flags::NETWORK.name, env = flags::NETWORK.env, default_value = "mainnet")]
    pub network: Network,
    /// CAR files, snapshots or http(s) URLs, imported in order.
    #[arg(required = true)]
    pub inputs: Vec<String>,
}
