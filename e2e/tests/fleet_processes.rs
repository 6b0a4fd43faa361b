//! The `lotus-follower` binary run with the arguments the operator generates,
//! as its pods would run it, against the test bed's Cassandra over TLS and a
//! devnet leader (only listen addresses, host names, the keyspace, the network
//! and mounted file paths mapped to this machine): the ingester fills the
//! store, the follower serves it, and SIGTERM stops both with exit 0, the
//! Lease released and ChainNotify subscribers told `xrpc.ch.close`. And two
//! followers on one host, differing only in `--listen`.

use std::{path::Path, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use lotus_follower::{
    chain::Network,
    devnet::{Devnet, DevnetOptions},
    rpc::auth::{Auth, Perm},
    serve::{ServeOptions, start},
    store::embedded::EmbeddedStore,
    testdata,
};
use lotus_follower_e2e::{
    Check, FollowerProcess, TestBed, TestKeyspace, TestNamespace, TestRole, free_address, http_get,
    wait_until,
};
use lotus_follower_operator::{
    build::{followers, ingester},
    crd::LotusFollowerCluster,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Where the operator mounts Secrets in the pods.
const MOUNTS: &str = "/etc/lotus-follower/";

/// What the operator put in the container's `args`.
fn container_args(deployment: &k8s_openapi::api::apps::v1::Deployment) -> Vec<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.args.clone())
        .unwrap_or_default()
}

/// The pod's arguments mapped to this machine: listen addresses to free ports
/// on 127.0.0.1, the database's hosts to the test bed's Cassandra and the
/// keyspace to the test's, the leader to the devnet, the datacenter to the test
/// bed's, the network to the devnet's, and mounted files to under `files`.
struct Mapping<'a> {
    cql_node: &'a str,
    keyspace: &'a str,
    leader: &'a str,
}

impl Mapping<'_> {
    fn apply(
        &self,
        args: &[String],
        files: &Path,
    ) -> anyhow::Result<(Vec<String>, Option<std::net::SocketAddr>)> {
        let mut mapped = Vec::with_capacity(args.len());
        let mut listen = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            mapped.push(arg.clone());
            let value = match arg.as_str() {
                "--listen" | "--metrics-listen" => {
                    let address = free_address()?;
                    if arg == "--listen" {
                        listen = Some(address);
                    }
                    iter.next();
                    address.to_string()
                }
                "--store" => {
                    iter.next();
                    format!("cql://{}/{}", self.cql_node, self.keyspace)
                }
                "--leader" => {
                    iter.next();
                    self.leader.to_owned()
                }
                "--cql-local-dc" => {
                    iter.next();
                    "datacenter1".to_owned()
                }
                "--network" => {
                    iter.next();
                    "devnet".to_owned()
                }
                _ => match iter.as_slice().first() {
                    Some(value) if value.starts_with(MOUNTS) => {
                        iter.next();
                        files.join(&value[MOUNTS.len()..]).display().to_string()
                    }
                    _ => continue,
                },
            };
            mapped.push(value);
        }
        Ok((mapped, listen))
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(std::fs::write(path, contents)?)
}

async fn call(address: std::net::SocketAddr, method: &str, params: Value) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (_, answer) =
        testdata::post(&format!("http://{address}/rpc/v1"), body.to_string(), None).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_arguments_for_the_external_example_run_over_tls_and_stop_on_sigterm()
-> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let ca_file = bed.require_cql_ca_file()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        let ns = TestNamespace::create(&client, "external").await?;
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "external").await?;
        let writer = TestRole::create(&admin, "ingester").await?;
        let reader = TestRole::create(&admin, "follower").await?;
        admin
            .query_unpaged(
                format!(
                    "GRANT ALL PERMISSIONS ON KEYSPACE {} TO {}",
                    keyspace.name, writer.name
                ),
                (),
            )
            .await?;
        admin
            .query_unpaged(
                format!(
                    "GRANT SELECT ON KEYSPACE {} TO {}",
                    keyspace.name, reader.name
                ),
                (),
            )
            .await?;

        // The leader: a devnet ten epochs into a chain started five minutes ago.
        let leader_dir = tempfile::tempdir()?;
        let leader_store = Arc::new(EmbeddedStore::open(leader_dir.path())?);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let mut devnet = Devnet::open(
            leader_store.clone(),
            DevnetOptions::default(),
            Some(now - 300),
        )?;
        for height in 1..=10 {
            devnet.produce(height)?;
        }
        let auth = Auth::random()?;
        let token = auth.token(Perm::Admin)?;
        let leader = start(
            leader_store,
            ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), auth),
        )
        .await?;

        // The resource of manifests/examples/external.yaml, in the test's namespace.
        let mut cluster: LotusFollowerCluster =
            serde_yaml::from_str(include_str!("../../manifests/examples/external.yaml"))?;
        cluster.metadata.namespace = Some(ns.name.clone());
        cluster.metadata.uid = Some("0000-uid".into());
        let ingester_args = container_args(&ingester::deployment(&cluster));
        let follower_args = container_args(&followers::deployment(&cluster));
        println!("the operator's ingester arguments: {ingester_args:?}");
        println!("the operator's follower arguments: {follower_args:?}");
        assert!(
            ingester_args.contains(&"--cql-tls-ca-file".to_owned()),
            "TLS is on in the example"
        );

        // The Secrets' files, as the pods mount them (each process its own role).
        let (ingester_files, follower_files) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let ca = std::fs::read_to_string(&ca_file)?;
        for (files, role) in [(&ingester_files, &writer), (&follower_files, &reader)] {
            write(
                &files.path().join("db-credentials/password"),
                &role.password,
            )?;
            write(&files.path().join("db-ca/ca.crt"), &ca)?;
            write(&files.path().join("leader-token/token"), &token)?;
        }
        let leader_url = format!("http://{}/rpc/v1", leader.rpc_address);
        let map = Mapping {
            cql_node: &bed.cql_node,
            keyspace: &keyspace.name,
            leader: &leader_url,
        };
        let (ingester_args, _) = map.apply(&ingester_args, ingester_files.path())?;
        let (follower_args, listen) = map.apply(&follower_args, follower_files.path())?;
        let listen = listen.ok_or_else(|| anyhow::anyhow!("the follower has no --listen"))?;

        // The Lease the operator would have created.
        let leases: Api<Lease> = ns.api();
        let lease_name = format!(
            "{}-ingester",
            cluster.metadata.name.clone().unwrap_or_default()
        );
        let mut lease = Lease::default();
        lease.metadata.name = Some(lease_name.clone());
        leases.create(&PostParams::default(), &lease).await?;

        let kubeconfig = bed.kubeconfig.display().to_string();
        let ingest = FollowerProcess::start(
            "ingest",
            &ingester_args,
            &[
                ("LOTUS_FOLLOWER_CQL_USERNAME", writer.name.clone()),
                ("HOSTNAME", "fleet-ingester-0".into()),
                ("KUBECONFIG", kubeconfig),
            ],
        )?;
        let serve = FollowerProcess::start(
            "serve",
            &follower_args,
            &[("LOTUS_FOLLOWER_CQL_USERNAME", reader.name.clone())],
        )?;

        let target = devnet.head().height();
        let head = wait_until(
            "the follower to serve the leader's head",
            Duration::from_secs(90),
            || async {
                for process in [&ingest, &serve] {
                    if let Some(status) = process.exited()? {
                        anyhow::bail!("{} exited ({status}):\n{}", process.name, process.log());
                    }
                }
                let head = call(listen, "Filecoin.ChainHead", json!([]))
                    .await
                    .unwrap_or_default();
                let height = head["result"]["Height"].as_i64();
                Ok(Check::when(
                    height == Some(target),
                    head,
                    format!("{height:?}"),
                ))
            },
        )
        .await?;
        let theirs = call(leader.rpc_address, "Filecoin.ChainHead", json!([])).await?;
        assert_eq!(head["result"], theirs["result"]);
        let actor = call(listen, "Filecoin.StateGetActor", json!(["t01005", null])).await?;
        assert!(actor["result"].is_object(), "{actor}");
        let lease_now = leases.get(&lease_name).await?.spec.unwrap_or_default();
        assert_eq!(
            lease_now.holder_identity.as_deref(),
            Some("fleet-ingester-0")
        );
        println!("over TLS: the ingester wrote heights 0..={target} and the follower serves them");

        // A ChainNotify subscriber on the follower.
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{listen}/rpc/v1")).await?;
        socket
            .send(Message::Text(
                json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify"})
                    .to_string()
                    .into(),
            ))
            .await?;
        let channel = next_json(&mut socket).await?["result"].clone();
        let _current = next_json(&mut socket).await?;

        // SIGTERM, as the kubelet stops pods.
        serve.terminate()?;
        ingest.terminate()?;
        let (status, took) = serve.exit_within(Duration::from_secs(5)).await?;
        println!("serve: {status} {took:?} after SIGTERM");
        assert!(status.success(), "serve: {status}\n{}", serve.log());
        let (status, took) = ingest.exit_within(Duration::from_secs(5)).await?;
        println!("ingest: {status} {took:?} after SIGTERM");
        assert!(status.success(), "ingest: {status}\n{}", ingest.log());
        let closed = loop {
            let message = next_json(&mut socket).await?;
            if message["method"] == "xrpc.ch.close" {
                break message;
            }
        };
        assert_eq!(closed["params"][0], channel);
        let released = leases.get(&lease_name).await?.spec.unwrap_or_default();
        assert_eq!(
            released.holder_identity, None,
            "the ingester released the Lease on SIGTERM"
        );

        // TLS is really verified: a CA that did not sign Cassandra's certificate is refused.
        let other_ca = ca_file.with_file_name("front-proxy-ca.crt");
        std::fs::copy(&other_ca, follower_files.path().join("db-ca/ca.crt"))?;
        let (follower_args, _) = map.apply(
            &container_args(&followers::deployment(&cluster)),
            follower_files.path(),
        )?;
        let refused = FollowerProcess::start(
            "serve (wrong CA)",
            &follower_args,
            &[("LOTUS_FOLLOWER_CQL_USERNAME", reader.name.clone())],
        )?;
        let (status, _) = refused.exit_within(Duration::from_secs(60)).await?;
        assert!(
            !status.success(),
            "a follower trusting another CA must not connect"
        );
        println!(
            "with another CA: {}",
            refused.log().lines().last().unwrap_or_default()
        );

        leader.stop().await;
        keyspace.drop(&admin).await?;
        writer.drop(&admin).await?;
        reader.drop(&admin).await?;
        ns.delete().await
    })
    .await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

/// Two followers on one host and one store, differing only in `--listen`:
/// with metrics on `/debug/metrics` by default, nothing else binds a port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_differing_only_in_listen_share_a_host() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let Some(car) = testdata::path("chains/chain4.car")? else {
        return Ok(());
    };
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "two_serves").await?;
        let password_file = tempfile::NamedTempFile::new()?;
        std::fs::write(password_file.path(), &bed.cql_password)?;
        let store = format!("cql://{}/{}", bed.cql_node, keyspace.name);
        let common = |listen: std::net::SocketAddr| -> Vec<String> {
            [
                "serve",
                "--network",
                "mainnet",
                "--store",
                &store,
                "--cql-username",
                &bed.cql_username,
                "--cql-password-file",
                &password_file.path().display().to_string(),
                "--cache-size",
                "1.5Gi",
                "--listen",
                &listen.to_string(),
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let import = FollowerProcess::start(
            "import",
            &[
                "import",
                "--network",
                "mainnet",
                "--store",
                &store,
                "--cql-username",
                &bed.cql_username,
                "--cql-password-file",
                &password_file.path().display().to_string(),
                &car.display().to_string(),
            ]
            .map(str::to_owned),
            &[],
        )?;
        let (status, _) = import.exit_within(Duration::from_secs(120)).await?;
        assert!(status.success(), "import: {}", import.log());

        let (a, b) = (free_address()?, free_address()?);
        let first = FollowerProcess::start("serve a", &common(a), &[])?;
        let second = FollowerProcess::start("serve b", &common(b), &[])?;
        for (process, address) in [(&first, a), (&second, b)] {
            wait_until(
                &format!("{} to be ready", process.name),
                Duration::from_secs(60),
                || async {
                    if let Some(status) = process.exited()? {
                        anyhow::bail!("{} exited ({status}):\n{}", process.name, process.log());
                    }
                    let (status, body) = http_get(address, "/health/readyz")
                        .await
                        .unwrap_or((0, String::new()));
                    Ok(Check::when(status == 200, (), format!("{status} {body}")))
                },
            )
            .await?;
            let head = call(address, "Filecoin.ChainHead", json!([])).await?;
            assert_eq!(head["result"]["Height"], 3, "{head}");
            let (status, metrics) = http_get(address, "/debug/metrics").await?;
            assert_eq!(status, 200);
            assert!(
                metrics.contains("lotus_follower_head_height 3"),
                "{metrics}"
            );
        }
        println!("two followers on {a} and {b}, one store, metrics on each one's /debug/metrics");
        for process in [first, second] {
            process.terminate()?;
            let (status, _) = process.exit_within(Duration::from_secs(5)).await?;
            assert!(status.success(), "{}: {status}", process.name);
        }
        keyspace.drop(&admin).await
    })
    .await
}
