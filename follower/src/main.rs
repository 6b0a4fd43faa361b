//! `lotus-follower`: the follower fleet's one binary (DESIGN.md, "Fixed
//! interfaces"). Every flag can also come from `LOTUS_FOLLOWER_<FLAG>`.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::Parser;
use lotus_follower::{
    chain::{Network, upgrades::Schedule},
    cli::{ChainArgs, Cli, Command, DevArgs, DevnetArgs, ImportArgs, IngestArgs, ServeArgs},
    devnet::{Devnet, DevnetError, DevnetOptions, api_secret, replay::Replay},
    import::{self, Progress},
    ingest::{Ingester, leader::Leader, lease::LeaseHolder},
    metrics::Metrics,
    rpc::{Limits, auth::Perm},
    serve::{RunningServer, ServeOptions},
    store::{CqlLogin, Store, StoreUrl},
};
use tokio::task::JoinHandle;
use tracing::{error, info};

fn main() -> ExitCode {
    lotus_follower::tls::install_default_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOTUS_FOLLOWER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Import(args) => run_import(args),
        Command::Serve(args) => run_serve(args),
        Command::Devnet(args) => match &args.replay {
            Some(car) => run_replay(&args, car),
            None => run_devnet(
                args.store.open(&args.cql.login()).map(Arc::from),
                args.listen,
                args.metrics_listen,
                args.chain.options(std::time::Duration::from_secs(30)),
                &args.chain,
            ),
        },
        Command::Dev(args) => run_dev(args),
        Command::Ingest(args) => run_ingest(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.leader.is_some() || !args.forward.is_empty() {
        tracing::warn!(
            "forwarding to the leader is not implemented yet: forwarded methods answer \"method not found\""
        );
    }
    let mut schedule = Schedule::of(args.network);
    for change in &args.upgrade_heights {
        schedule.set(change)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    // Before anything slow (connecting to the store): a SIGTERM right after
    // start must not kill the process with the default action.
    let signals = runtime.block_on(async { Signals::install() })?;
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let options = ServeOptions {
        network: args.network,
        schedule,
        block_delay_secs: args.network.block_delay_secs(),
        listen: args.listen,
        listen_flag: "--listen",
        metrics_listen: args.metrics_listen,
        cache_bytes: args.cache_size,
        limits: args.limits.limits(),
        max_lookback_epochs: args.max_lookback_epochs,
        max_wait: std::time::Duration::from_secs(args.max_wait_seconds),
        shutdown_timeout: args.shutdown_timeout,
        pool: None,
    };
    runtime.block_on(async {
        let server = lotus_follower::serve::start(store, options).await?;
        info!(rpc = %server.rpc_address, metrics = ?server.metrics_address, "serving");
        signals.wait().await;
        info!("shutting down: closing channels, finishing calls in flight");
        server.stop().await;
        info!("stopped");
        anyhow::Ok(())
    })
}

/// The signals that stop a long-running subcommand: SIGTERM (Kubernetes
/// stopping the pod; as a container's PID 1 nothing else would handle it) and
/// SIGINT (Ctrl-C). Installed up front, so a signal that arrives while the
/// process starts is not lost.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => info!("SIGTERM received"),
            _ = self.interrupt.recv() => info!("SIGINT received"),
        }
    }
}

/// A devnet producing into `store` and serving it, with its pool behind an
/// admin token: the server and the producer, which run until `stop`.
async fn start_devnet(
    store: Arc<dyn Store>,
    (listen, listen_flag): (SocketAddr, &'static str),
    metrics_listen: Option<SocketAddr>,
    options: DevnetOptions,
    chain: &ChainArgs,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(RunningServer, JoinHandle<Result<(), DevnetError>>)> {
    let devnet = tokio::task::block_in_place(|| Devnet::open(store.clone(), options, None))?;
    let auth = api_secret::auth(chain.api_secret_file.as_deref())?;
    let token = auth.token(Perm::Admin)?;
    match chain.token_file.as_deref() {
        Some(path) => {
            write_private(path, &token)?;
            info!(path = %path.display(), "admin token written");
        }
        None => println!("admin token: {token}"),
    }
    let serve = ServeOptions {
        block_delay_secs: devnet.block_secs(),
        listen,
        listen_flag,
        metrics_listen,
        cache_bytes: 64 << 20,
        max_wait: std::time::Duration::from_secs(300),
        ..ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), auth)
    };
    info!(head = devnet.head().height(), "devnet chain opened");
    let server = lotus_follower::serve::start(store, serve).await?;
    info!(rpc = %server.rpc_address, "serving the devnet");
    Ok((server, tokio::spawn(devnet.run(stop))))
}

/// Waits for SIGTERM or SIGINT, or for `task` to end (with its error).
async fn until_interrupted<E: Into<anyhow::Error>>(
    signals: Signals,
    task: &mut JoinHandle<Result<(), E>>,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = signals.wait() => Ok(()),
        finished = task => finished?.map_err(Into::into),
    }
}

fn run_devnet(
    store: Result<Arc<dyn Store>, lotus_follower::store::StoreError>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    options: DevnetOptions,
    chain: &ChainArgs,
) -> anyhow::Result<()> {
    let store = store?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let signals = Signals::install()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (server, mut producer) = start_devnet(
            store,
            (listen, "--listen"),
            metrics_listen,
            options,
            chain,
            stopped,
        )
        .await?;
        let result = until_interrupted(signals, &mut producer).await;
        let _ = stop.send(true);
        info!("shutting down: closing channels");
        server.stop().await;
        result
    })
}

fn run_ingest(args: IngestArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let token = args
        .leader_token_file
        .as_ref()
        .map(|path| std::fs::read_to_string(path).map(|text| text.trim().to_owned()))
        .transpose()?;
    let metrics = Metrics::new()?;
    let ingester = Arc::new(Ingester::new(
        store,
        Leader::new(&args.leader, token, std::time::Duration::from_secs(30)),
        args.network,
        args.max_gap,
        // The fencing term comes from the ingester's Lease once it takes one.
        1,
        metrics.clone(),
    ));
    tokio::runtime::Runtime::new()?.block_on(async {
        let signals = Signals::install()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (metrics_address, _) =
            lotus_follower::metrics::serve(args.metrics_listen, metrics, stopped.clone()).await?;
        let lease = match &args.lease {
            Some(lease) => Some(lease_holder(lease).await?),
            None => None,
        };
        info!(leader = %args.leader, metrics = %metrics_address, lease = ?args.lease, "ingesting");
        let mut following = tokio::spawn(async move {
            ingester.run(INGEST_POLL, lease, stopped).await;
            anyhow::Ok(())
        });
        let result = until_interrupted(signals, &mut following).await;
        let _ = stop.send(true);
        // Let it give up the Lease before the process ends (it stops waiting
        // for a sync in progress at once; the Lease call is bounded by the
        // Kubernetes client's timeouts).
        let _ = following.await;
        info!("stopped");
        result
    })
}

/// The Lease `<namespace>/<name>` this pod competes for, as its hostname
/// (the pod name), through the in-cluster Kubernetes client.
async fn lease_holder(lease: &str) -> anyhow::Result<LeaseHolder> {
    let (namespace, name) = lease
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--lease {lease:?}: expected <namespace>/<name>"))?;
    let identity =
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("ingester-{}", std::process::id()));
    let client = kube::Client::try_default().await?;
    Ok(LeaseHolder::new(
        kube::Api::namespaced(client, namespace),
        name,
        &identity,
    ))
}

/// How often the ingester asks the leader for its head.
const INGEST_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// `devnet --replay`: the CAR's chain revealed epoch by epoch, served read-only.
fn run_replay(args: &DevnetArgs, car: &str) -> anyhow::Result<()> {
    if args.chain.api_secret_file.is_some() || args.chain.token_file.is_some() {
        // A replay serves reads only: it has no pool and checks no tokens.
        tracing::warn!("--api-secret-file and --token-file are unused with --replay");
    }
    let store: Arc<dyn Store> = Arc::from(args.store.open(&args.cql.login())?);
    let replay = Replay::open(store.clone(), car, args.network)?;
    info!(
        from = replay.head().height(),
        to = replay.tipsets().last().map(|t| t.height()),
        "replaying"
    );
    let block_time = args
        .chain
        .block_time
        .unwrap_or(std::time::Duration::from_secs(30));
    let serve = ServeOptions {
        network: args.network,
        schedule: Schedule::of(args.network),
        // Lotus reports whole seconds; a sub-second devnet reports 1.
        block_delay_secs: block_time.as_secs().max(1),
        listen: args.listen,
        listen_flag: "--listen",
        metrics_listen: args.metrics_listen,
        cache_bytes: 64 << 20,
        limits: Limits::default(),
        max_lookback_epochs: i64::MAX,
        max_wait: std::time::Duration::from_secs(300),
        shutdown_timeout: lotus_follower::serve::DEFAULT_SHUTDOWN_TIMEOUT,
        pool: None,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let signals = Signals::install()?;
        let server = lotus_follower::serve::start(store, serve).await?;
        info!(rpc = %server.rpc_address, "serving the replay");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut replaying = tokio::spawn(replay.run(block_time, stopped));
        let result = until_interrupted(signals, &mut replaying).await;
        let _ = stop.send(true);
        server.stop().await;
        result
    })
}

/// `dev`: a devnet leader, an ingester and a follower in one process, on two
/// throwaway embedded stores (the leader's and the follower's), with a short
/// block time; the follower answers on `--listen`.
fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("lotus-follower-dev-{}", std::process::id()));
    let open = |name: &str| -> anyhow::Result<Arc<dyn Store>> {
        let url: StoreUrl = format!("embedded:{}", dir.join(name).display())
            .parse()
            .map_err(anyhow::Error::msg)?;
        Ok(Arc::from(url.open(&CqlLogin::default())?))
    };
    let result = (|| {
        let (leader_store, follower_store) = (open("leader")?, open("follower")?);
        info!(stores = %dir.display(), "dev: a devnet leader, an ingester and a follower");
        tokio::runtime::Runtime::new()?.block_on(async {
            let signals = Signals::install()?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (leader, mut producer) = start_devnet(
                leader_store,
                (args.leader_listen, "--leader-listen"),
                None,
                args.chain.options(std::time::Duration::from_secs(4)),
                &args.chain,
                stopped.clone(),
            )
            .await?;
            // Lotus reports whole seconds; a sub-second devnet reports 1.
            let leader_block_delay = args
                .chain
                .options(std::time::Duration::from_secs(4))
                .block_time
                .as_secs()
                .max(1);
            let ingester = Arc::new(Ingester::new(
                follower_store.clone(),
                Leader::new(
                    &format!("http://{}/rpc/v1", leader.rpc_address),
                    None,
                    std::time::Duration::from_secs(10),
                ),
                Network::Devnet,
                i64::MAX,
                1,
                Metrics::new()?,
            ));
            let ingesting = tokio::spawn(ingester.run(INGEST_POLL, None, stopped.clone()));
            let follower = lotus_follower::serve::start(
                follower_store,
                ServeOptions {
                    network: Network::Devnet,
                    schedule: Schedule::of(Network::Devnet),
                    block_delay_secs: leader_block_delay,
                    listen: args.listen,
                    listen_flag: "--listen",
                    metrics_listen: args.metrics_listen,
                    cache_bytes: 64 << 20,
                    limits: Limits::default(),
                    max_lookback_epochs: 2880,
                    max_wait: std::time::Duration::from_secs(300),
                    shutdown_timeout: lotus_follower::serve::DEFAULT_SHUTDOWN_TIMEOUT,
                    pool: None,
                },
            )
            .await?;
            info!(
                follower = %follower.rpc_address,
                leader = %leader.rpc_address,
                "dev: query the follower; push messages to the leader with the admin token"
            );
            let result = until_interrupted(signals, &mut producer).await;
            let _ = stop.send(true);
            info!("shutting down: closing channels");
            follower.stop().await;
            let _ = ingesting.await;
            leader.stop().await;
            result
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let store = args.store.open(&args.cql.login())?;
    for input in &args.inputs {
        info!(input, "importing");
        let mut show = |p: Progress| {
            let seconds = p.elapsed.as_secs_f64().max(1e-9);
            info!(
                blocks = p.blocks,
                megabytes = format!("{:.1}", p.bytes as f64 / 1e6),
                blocks_per_second = format!("{:.0}", p.blocks as f64 / seconds),
                "streaming"
            );
        };
        let report = import::import(store.as_ref(), input, args.network, &mut show)?;
        let seconds = report.elapsed.as_secs_f64().max(1e-9);
        info!(
            input,
            blocks = report.blocks,
            megabytes = format!("{:.2}", report.bytes as f64 / 1e6),
            seconds = format!("{seconds:.3}"),
            blocks_per_second = format!("{:.0}", report.blocks as f64 / seconds),
            megabytes_per_second = format!("{:.1}", report.bytes as f64 / 1e6 / seconds),
            tipsets = report.indexed.tipsets,
            complete_blocks = report.complete_blocks,
            partial_blocks = report.partial_blocks,
            head_height = report.head.height,
            head = %report.head.tipset,
            "imported"
        );
    }
    Ok(())
}
