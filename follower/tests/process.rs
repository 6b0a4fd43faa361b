//! The `lotus-follower` binary as a process, as Kubernetes runs it: SIGTERM
//! stops every long-running subcommand cleanly (exit 0, channels closed with
//! `xrpc.ch.close`), two servers differing only in `--listen` share a host,
//! `--cache-size` takes any Kubernetes quantity, a taken port is named with its
//! flag, and the devnet runs with a block time below a second.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use lotus_follower::{chain::Network, import::import, store::embedded::EmbeddedStore, testdata};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_lotus-follower");

/// A child process, killed if the test ends first; its stderr goes to a file
/// printed when the test fails.
struct Process {
    child: Child,
    log: tempfile::NamedTempFile,
    name: String,
}

impl Process {
    fn start(name: &str, args: &[&str]) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(BINARY)
            .args(args)
            // Nothing from the environment of the test run: each flag is given.
            .env_remove("LOTUS_FOLLOWER_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen()?)
            .spawn()?;
        Ok(Self {
            child,
            log,
            name: name.to_owned(),
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exit_within(&mut self, limit: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "{} did not exit within {limit:?}; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("{} was still running; its log:\n{}", self.name, self.log());
        }
    }
}

/// A port free right now on 127.0.0.1.
fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn get(url: String) -> anyhow::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, String)> {
        let response = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()?;
        Ok((
            response.status().as_u16(),
            response.into_body().read_to_string()?,
        ))
    })
    .await?
}

/// Waits until `address` answers `/health/readyz` with 200.
async fn ready(process: &mut Process, address: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = get(format!("http://{address}/health/readyz")).await {
            return Ok(());
        }
        if let Some(status) = process.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); its log:\n{}",
                process.name,
                process.log()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{} not ready within 30 s; its log:\n{}",
            process.name,
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(address: SocketAddr, method: &str, params: Value) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (_, answer) =
        testdata::post(&format!("http://{address}/rpc/v1"), body.to_string(), None).await?;
    Ok(answer)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A ChainNotify subscriber: the socket, its channel id, after the `current` batch.
async fn subscribe(address: SocketAddr) -> anyhow::Result<(Socket, Value)> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{address}/rpc/v1")).await?;
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify", "params": []})
                .to_string()
                .into(),
        ))
        .await?;
    let channel = next_json(&mut socket).await?["result"].clone();
    anyhow::ensure!(channel.is_number(), "no channel: {channel}");
    let current = next_json(&mut socket).await?;
    anyhow::ensure!(current["params"][1][0]["Type"] == "current", "{current}");
    Ok((socket, channel))
}

async fn next_json(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

/// Reads until the channel's `xrpc.ch.close` (head changes may come first).
async fn closed(socket: &mut Socket, channel: &Value) -> anyhow::Result<()> {
    loop {
        let message = next_json(socket).await?;
        if message["method"] == "xrpc.ch.close" {
            anyhow::ensure!(&message["params"][0] == channel, "{message}");
            return Ok(());
        }
    }
}

fn import_into(dir: &Path, file: &str) -> anyhow::Result<bool> {
    let Some(car) = testdata::path(file)? else {
        return Ok(false);
    };
    let store = EmbeddedStore::open(dir)?;
    import(
        &store,
        &car.to_string_lossy(),
        Network::Mainnet,
        &mut |_| {},
    )?;
    Ok(true)
}

fn embedded(dir: &Path) -> String {
    format!("embedded:{}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_closing_channels_and_exits_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    if !import_into(dir.path(), "chains/export40.car")? {
        return Ok(());
    }
    let address = free_address()?;
    let listen = address.to_string();
    let store = embedded(dir.path());
    let mut serve = Process::start("serve", &["serve", "--store", &store, "--listen", &listen])?;
    ready(&mut serve, address).await?;
    let (mut socket, channel) = subscribe(address).await?;

    serve.signal("TERM")?;
    let (status, took) = serve.exit_within(Duration::from_secs(5)).await?;
    println!("serve exited with {status} {took:?} after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        serve.log()
    );
    closed(&mut socket, &channel).await?;

    // SIGINT (Ctrl-C) too.
    let mut serve = Process::start("serve", &["serve", "--store", &store, "--listen", &listen])?;
    ready(&mut serve, address).await?;
    serve.signal("INT")?;
    let (status, _) = serve.exit_within(Duration::from_secs(5)).await?;
    assert!(status.success(), "exit status {status} after SIGINT");
    Ok(())
}

/// Two followers on one host, differing only in `--listen` (and their
/// stores: an embedded store is one process's), one with a `cacheSize` the
/// operator may pass; a third on a taken port says which address and flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_share_a_host_and_a_taken_port_is_named() -> anyhow::Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    if !import_into(dir_a.path(), "chains/chain4.car")?
        || !import_into(dir_b.path(), "chains/chain4.car")?
    {
        return Ok(());
    }
    let (a, b) = (free_address()?, free_address()?);
    let (store_a, store_b) = (embedded(dir_a.path()), embedded(dir_b.path()));
    let (listen_a, listen_b) = (a.to_string(), b.to_string());
    let mut first = Process::start(
        "serve a",
        &[
            "serve",
            "--store",
            &store_a,
            "--listen",
            &listen_a,
            "--cache-size",
            "1.5Gi",
        ],
    )?;
    let mut second = Process::start(
        "serve b",
        &[
            "serve",
            "--store",
            &store_b,
            "--listen",
            &listen_b,
            "--cache-size",
            "1.5Gi",
        ],
    )?;
    ready(&mut first, a).await?;
    ready(&mut second, b).await?;
    for address in [a, b] {
        let head = call(address, "Filecoin.ChainHead", json!([])).await?;
        assert_eq!(head["result"]["Height"], 3, "{head}");
        let (status, metrics) = get(format!("http://{address}/debug/metrics")).await?;
        assert_eq!(status, 200);
        assert!(
            metrics.contains("lotus_follower_rpc_requests_total"),
            "{metrics}"
        );
    }

    let dir_c = tempfile::tempdir()?;
    let store_c = embedded(dir_c.path());
    let mut third = Process::start(
        "serve c",
        &["serve", "--store", &store_c, "--listen", &listen_a],
    )?;
    let (status, _) = third.exit_within(Duration::from_secs(30)).await?;
    assert!(!status.success());
    let log = third.log();
    assert!(
        log.contains(&format!("cannot listen on {a} (--listen)")),
        "the error names the address and the flag:\n{log}"
    );

    for mut process in [first, second] {
        process.signal("TERM")?;
        let (status, _) = process.exit_within(Duration::from_secs(5)).await?;
        assert!(status.success());
    }
    Ok(())
}

/// `dev` with a 200 ms block time: epochs advance several times a second, a
/// follower subscriber sees them, and SIGTERM ends it all with exit 0 and
/// `xrpc.ch.close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_below_a_second_per_block_and_stops_on_sigterm() -> anyhow::Result<()> {
    let (follower, leader) = (free_address()?, free_address()?);
    let (listen, leader_listen) = (follower.to_string(), leader.to_string());
    let mut dev = Process::start(
        "dev",
        &[
            "dev",
            "--listen",
            &listen,
            "--leader-listen",
            &leader_listen,
            "--block-time",
            "200ms",
        ],
    )?;
    // The follower is ready once the ingester has written its first head.
    let started = Instant::now();
    let height = loop {
        let head = call(follower, "Filecoin.ChainHead", json!([])).await;
        if let Ok(head) = &head
            && let Some(height) = head["result"]["Height"].as_i64()
            && height >= 10
        {
            break height;
        }
        if let Some(status) = dev.child.try_wait()? {
            anyhow::bail!("dev exited ({status}):\n{}", dev.log());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the devnet did not reach height 10 within 60 s at 200 ms per epoch:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "dev reached height {height} in {:?} at 200 ms per epoch",
        started.elapsed()
    );
    let version = call(leader, "Filecoin.Version", json!([])).await?;
    assert_eq!(
        version["result"]["BlockDelay"], 1,
        "BlockDelaySecs is at least 1: {version}"
    );
    let head = call(leader, "Filecoin.ChainHead", json!([])).await?;
    let genesis = call(leader, "Filecoin.ChainGetGenesis", json!([])).await?;
    let (at, from) = (
        head["result"]["Blocks"][0]["Timestamp"]
            .as_u64()
            .unwrap_or_default(),
        genesis["result"]["Blocks"][0]["Timestamp"]
            .as_u64()
            .unwrap_or_default(),
    );
    let height = head["result"]["Height"].as_u64().unwrap_or_default();
    // Whole seconds, from elapsed milliseconds: height × 0.2 s, rounded down.
    assert_eq!(at - from, height * 200 / 1000, "{head}");

    let (mut socket, channel) = subscribe(follower).await?;
    dev.signal("TERM")?;
    let (status, took) = dev.exit_within(Duration::from_secs(5)).await?;
    println!("dev exited with {status} {took:?} after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        dev.log()
    );
    closed(&mut socket, &channel).await?;
    Ok(())
}

/// The ingester with `--lease` makes a Kubernetes client at start. With the
/// CQL driver's TLS support linked in, rustls has two providers and panicked
/// there unless the binary installs one; here the API server is unreachable,
/// so the ingester keeps retrying, and SIGTERM still stops it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_with_a_lease_makes_its_client_and_stops_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let unreachable = free_address()?;
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{unreachable}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )?;
    let store = embedded(&dir.path().join("store"));
    let leader = format!("http://{}/rpc/v1", free_address()?);
    let metrics = free_address()?.to_string();
    let log = tempfile::NamedTempFile::new()?;
    let child = Command::new(BINARY)
        .args([
            "ingest",
            "--store",
            &store,
            "--leader",
            &leader,
            "--lease",
            "ns/fleet-ingester",
        ])
        .args(["--metrics-listen", &metrics, "--network", "devnet"])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .spawn()?;
    let mut ingest = Process {
        child,
        log,
        name: "ingest".into(),
    };
    // Running (and retrying) a while later, not dead of a panic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(status) = ingest.child.try_wait()? {
        anyhow::bail!("ingest exited ({status}):\n{}", ingest.log());
    }
    ingest.signal("TERM")?;
    let (status, took) = ingest.exit_within(Duration::from_secs(5)).await?;
    println!("ingest exited with {status} {took:?} after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        ingest.log()
    );
    Ok(())
}
