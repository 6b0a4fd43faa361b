//! The write path's benchmark phases, each run as its own process by
//! `follower/bench/write-path` (so each phase's peak RSS is its own). Every
//! phase prints one JSON line on stdout.
//!
//! - `keyspace create|drop <name>`.
//! - `gen <car> <min-blocks> <churn>`: a devnet chain exported as a CARv1 of at
//!   least `min-blocks` blocks (every block reachable from the head).
//! - `raw <car> <keyspace> <in-flight>`: the baseline, the CAR's blocks as plain
//!   prepared INSERTs of the same rows with the scylla driver.
//! - `import <car> <keyspace>`: `import` into the CQL store (schema created
//!   before the clock starts).
//! - `ingest <keyspace> <objects/s> <seconds> <churn>`: a devnet leader
//!   producing about `objects/s`, followed by the ingester into the store:
//!   objects/s ingested and the lag.
//! - `reads <car> <keyspace> <seconds> <in-flight>`: a follower with its
//!   response cache off answering ChainReadObj of random blocks and
//!   StateGetActor at random heights, against raw SELECTs of the same blocks.
//!
//! The database: `LOTUS_FOLLOWER_TESTBED_CQL` (host:port), user
//! `LOTUS_FOLLOWER_TESTBED_CQL_USERNAME`, password in
//! `LOTUS_FOLLOWER_TESTBED_CQL_PASSWORD_FILE`; keyspaces must exist.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use cid::Cid;
use futures::{StreamExt, TryStreamExt, stream};
use fvm_ipld_blockstore::Blockstore;
use lotus_follower::{
    chain::{BlockHeader, Network, TipSet, TipSetKey, cbor},
    devnet::{Devnet, DevnetOptions, Step, keys::Account},
    import::{CarStream, Frame, import, index_tipset, links},
    ingest::{Ingester, leader::Leader},
    metrics::Metrics,
    rpc::auth::Auth,
    serve::{ServeOptions, start},
    store::{
        Store, WriteBatch,
        cql::{CqlOptions, CqlStore},
        embedded::EmbeddedStore,
    },
};
use serde_json::json;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

fn cql_options(keyspace: &str) -> anyhow::Result<CqlOptions> {
    Ok(CqlOptions {
        contact_points: vec![env("LOTUS_FOLLOWER_TESTBED_CQL")?],
        keyspace: keyspace.to_owned(),
        username: Some(env("LOTUS_FOLLOWER_TESTBED_CQL_USERNAME")?),
        password: Some(
            std::fs::read_to_string(env("LOTUS_FOLLOWER_TESTBED_CQL_PASSWORD_FILE")?)?
                .trim()
                .to_owned(),
        ),
        request_timeout: Duration::from_secs(30),
        local_dc: None,
        address_map: Vec::new(),
        tls_ca_file: None,
    })
}

/// This process's peak resident set, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A CAR's roots and blocks.
type Car = (Vec<Cid>, Vec<(Cid, Vec<u8>)>);

fn read_car(path: &str) -> anyhow::Result<Car> {
    let mut car = CarStream::open(std::fs::File::open(path)?)?;
    let roots = car.roots.clone();
    let mut blocks = Vec::new();
    while let Some(frame) = car.next_frame(|_| false)? {
        if let Frame::Block { cid, data } = frame {
            blocks.push((cid, data));
        }
    }
    Ok((roots, blocks))
}

fn generate(out: &str, min_blocks: usize, churn: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let options = DevnetOptions {
        state_churn: churn,
        ..DevnetOptions::default()
    };
    let mut devnet = Devnet::open(store.clone(), options, Some(1_700_000_000))?;
    let mut produced = 0;
    let mut height = 0;
    while produced < min_blocks {
        height += 1;
        if let Step::Produced { objects, .. } = devnet.produce(height)? {
            produced += objects;
        }
    }
    let head = devnet.head().key().clone();
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut writer =
        fvm_ipld_car::CarWriter::new(fvm_ipld_car::CarHeader::from(head.cids().to_vec()), file)?;
    let (mut seen, mut stack) = (HashSet::new(), head.cids().to_vec());
    let (mut blocks, mut bytes) = (0usize, 0usize);
    while let Some(cid) = stack.pop() {
        if cid.hash().code() == 0 || !seen.insert(cid) {
            continue;
        }
        let Some(data) = store.get_block(&cid)? else {
            continue;
        };
        stack.extend(links(&cid, &data));
        blocks += 1;
        bytes += data.len();
        writer.write(fvm_ipld_car::Block { cid, data })?;
    }
    writer.flush()?;
    Ok(json!({"phase": "gen", "blocks": blocks, "bytes": bytes, "epochs": height}))
}

async fn session(keyspace: &str) -> anyhow::Result<scylla::client::session::Session> {
    let options = cql_options(keyspace)?;
    Ok(scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .user(
            options.username.unwrap_or_default(),
            options.password.unwrap_or_default(),
        )
        .use_keyspace(keyspace, false)
        .build()
        .await?)
}

/// The index rows an import of the CAR writes, computed as the import does
/// (every tipset from the head down), without a store.
fn index_rows(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> anyhow::Result<WriteBatch> {
    let memory = fvm_ipld_blockstore::MemoryBlockstore::new();
    for (cid, data) in blocks {
        memory.put_keyed(cid, data)?;
    }
    let mut batch = WriteBatch::default();
    let mut key = TipSetKey(roots.to_vec());
    loop {
        let headers = key
            .cids()
            .iter()
            .map(|cid| {
                let data = memory
                    .get(cid)?
                    .with_context(|| format!("{cid} is not in the CAR"))?;
                Ok(cbor::decode::<BlockHeader>(cid, &data)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tipset = TipSet::new(headers)?;
        index_tipset(&memory, &tipset, Network::Devnet, &mut batch)?;
        if tipset.height() == 0 {
            return Ok(batch);
        }
        key = tipset.parents();
    }
}

/// The baseline: the rows an import of the CAR writes — its blocks, then
/// its index rows — with the same keys and values, into tables of the
/// store's own schema, as plain prepared INSERTs, `in_flight` at a time, with
/// none of the store's ordering. The values are encoded as `CqlStore` encodes
/// them (store/cql.rs).
async fn raw(car: &str, keyspace: &str, in_flight: usize) -> anyhow::Result<serde_json::Value> {
    let (roots, blocks) = read_car(car)?;
    let indices = index_rows(&roots, &blocks)?;
    tokio::task::spawn_blocking({
        let keyspace = keyspace.to_owned();
        move || {
            CqlStore::connect(&cql_options(&keyspace)?)?
                .create_tables()
                .map_err(anyhow::Error::from)
        }
    })
    .await??;
    let session = session(keyspace).await?;
    let prepare = |statement: &'static str| {
        let session = &session;
        async move {
            let mut prepared = session.prepare(statement).await?;
            prepared.set_consistency(scylla::statement::Consistency::Quorum);
            anyhow::Ok(prepared)
        }
    };
    let block = prepare("INSERT INTO blocks (k, chunk, chunks, data) VALUES (?, ?, ?, ?)").await?;
    let by_height =
        prepare("INSERT INTO tipsets_by_height (bucket, height, tipset) VALUES (?, ?, ?)").await?;
    let by_key = prepare("INSERT INTO tipset_keys (normalized, canonical) VALUES (?, ?)").await?;
    let inclusion =
        prepare("INSERT INTO inclusions (message, tipset, idx) VALUES (?, ?, ?)").await?;
    let nonce_use =
        prepare("INSERT INTO nonce_uses (sender, nonce, message, tipset) VALUES (?, ?, ?, ?)")
            .await?;
    // Every row's statement and values, encoded before the clock starts.
    type Row<'a> = (
        &'a scylla::statement::prepared::PreparedStatement,
        Vec<scylla::value::CqlValue>,
    );
    use scylla::value::CqlValue::{BigInt, Blob, Int};
    let mut rows: Vec<Row> = blocks
        .iter()
        .map(|(cid, data)| {
            (
                &block,
                vec![
                    Blob(cid.hash().to_bytes()),
                    Int(0),
                    Int(1),
                    Blob(data.clone()),
                ],
            )
        })
        .collect();
    let block_rows = rows.len();
    for (height, tipset) in &indices.tipsets {
        rows.push((
            &by_height,
            vec![
                BigInt(height.div_euclid(2880)),
                BigInt(*height),
                Blob(tipset.to_bytes()),
            ],
        ));
        rows.push((
            &by_key,
            vec![
                Blob(tipset.normalized().to_bytes()),
                Blob(tipset.to_bytes()),
            ],
        ));
    }
    for (message, included) in &indices.inclusions {
        rows.push((
            &inclusion,
            vec![
                Blob(message.to_bytes()),
                Blob(included.tipset.to_bytes()),
                Int(included.index as i32),
            ],
        ));
    }
    for (sender, nonce, used) in &indices.nonce_uses {
        rows.push((
            &nonce_use,
            vec![
                Blob(sender.to_bytes()),
                BigInt(*nonce as i64),
                Blob(used.message.to_bytes()),
                Blob(used.tipset.to_bytes()),
            ],
        ));
    }
    let started = Instant::now();
    stream::iter(&rows)
        .map(|(statement, values)| session.execute_unpaged(statement, values))
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "phase": "raw", "rows": rows.len(), "block_rows": block_rows,
        "index_rows": rows.len() - block_rows, "seconds": seconds,
        "rows_per_s": rows.len() as f64 / seconds, "in_flight": in_flight,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn import_phase(car: &str, keyspace: &str) -> anyhow::Result<serde_json::Value> {
    let store = CqlStore::connect(&cql_options(keyspace)?)?;
    store.migrate()?;
    let started = Instant::now();
    let report = import(&store, car, Network::Devnet, &mut |_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "phase": "import", "blocks": report.blocks, "complete": report.complete_blocks,
        "partial": report.partial_blocks, "index_rows": report.indexed.rows,
        "rows_per_s": (report.blocks + report.indexed.rows) as f64 / seconds, "seconds": seconds,
        "blocks_per_s": report.blocks as f64 / seconds, "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Epochs the leader produces before the ingester starts, for the catch-up.
const CATCH_UP_EPOCHS: i64 = 20;

async fn ingest_phase(
    keyspace: &str,
    target_rate: f64,
    seconds: u64,
    churn: usize,
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let leader_store = Arc::new(EmbeddedStore::open(dir.path())?);
    let options = DevnetOptions {
        state_churn: churn,
        ..DevnetOptions::default()
    };
    let devnet = Devnet::open(leader_store.clone(), options, Some(1_700_000_000))?;
    let server = start(
        leader_store.clone(),
        ServeOptions {
            block_delay_secs: devnet.block_secs(),
            listen: "127.0.0.1:0".parse()?,
            ..ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), Auth::random()?)
        },
    )
    .await?;
    let url = format!("http://{}/rpc/v1", server.rpc_address);
    let store = Arc::new(
        tokio::task::spawn_blocking({
            let keyspace = keyspace.to_owned();
            move || -> anyhow::Result<CqlStore> {
                let store = CqlStore::connect(&cql_options(&keyspace)?)?;
                store.migrate()?;
                Ok(store)
            }
        })
        .await??,
    );
    let ingester = Arc::new(Ingester::new(
        store.clone(),
        Leader::new(&url, None, Duration::from_secs(30)),
        Network::Devnet,
        1_000_000,
        1,
        Metrics::new()?,
    ));
    // Catching up: the leader produces `CATCH_UP_EPOCHS` epochs first
    // (unmeasured), then the ingester copies them all in one sync, with the
    // leader only serving: the ingester's own rate, not shared with the
    // devnet's production (its signing and its own database take most of
    // this machine's two cores while it produces).
    let mut devnet = devnet;
    let mut height = 0;
    let mut catch_up_objects = 0;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        while height < CATCH_UP_EPOCHS {
            height += 1;
            if let Step::Produced { objects, .. } = devnet.produce(height)? {
                catch_up_objects += objects;
            }
        }
        Ok(())
    })?;
    let caught_up = Instant::now();
    let synced = tokio::task::spawn_blocking({
        let ingester = ingester.clone();
        move || ingester.sync_once()
    })
    .await??
    .context("the catch-up synced nothing")?;
    let catch_up_seconds = caught_up.elapsed().as_secs_f64();
    anyhow::ensure!(
        synced.height == height,
        "the catch-up stopped at {} of {height}",
        synced.height
    );

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let leader_height = Arc::new(AtomicU64::new(height as u64));
    // The leader: produces epochs back to back, paced to `target_rate` objects/s.
    let producer = std::thread::spawn({
        let (stop, produced, leader_height) =
            (stop.clone(), produced.clone(), leader_height.clone());
        move || -> anyhow::Result<()> {
            let started = Instant::now();
            let mut height = height;
            while !stop.load(Ordering::SeqCst) {
                height += 1;
                if let Step::Produced { objects, .. } = devnet.produce(height)? {
                    produced.fetch_add(objects as u64, Ordering::SeqCst);
                }
                leader_height.store(height as u64, Ordering::SeqCst);
                let due = produced.load(Ordering::SeqCst) as f64 / target_rate;
                let ahead = due - started.elapsed().as_secs_f64();
                if ahead > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
            }
            Ok(())
        }
    });
    let ingested = Arc::new(AtomicU64::new(0));
    let ingested_rows = Arc::new(AtomicU64::new(0));
    let follower = std::thread::spawn({
        let (stop, ingested, ingested_rows, ingester) = (
            stop.clone(),
            ingested.clone(),
            ingested_rows.clone(),
            ingester.clone(),
        );
        move || -> anyhow::Result<()> {
            while !stop.load(Ordering::SeqCst) {
                match ingester.sync_once()? {
                    Some(synced) => {
                        ingested.fetch_add(synced.objects as u64, Ordering::SeqCst);
                        ingested_rows.fetch_add(synced.rows, Ordering::SeqCst);
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            Ok(())
        }
    });
    let mut max_lag = 0i64;
    let mut lags = Vec::new();
    let started = Instant::now();
    // Warm-up excluded: counting starts after the first 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (start_objects, start_time) = (ingested.load(Ordering::SeqCst), Instant::now());
    let start_rows = ingested_rows.load(Ordering::SeqCst);
    let start_produced = produced.load(Ordering::SeqCst);
    while started.elapsed() < Duration::from_secs(seconds + 5) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let store = store.clone();
        let head = tokio::task::spawn_blocking(move || store.head()).await??;
        let lag = leader_height.load(Ordering::SeqCst) as i64 - head.map_or(0, |head| head.height);
        max_lag = max_lag.max(lag);
        lags.push(lag);
    }
    let window = start_time.elapsed().as_secs_f64();
    let objects = ingested.load(Ordering::SeqCst) - start_objects;
    let rows = ingested_rows.load(Ordering::SeqCst) - start_rows;
    let produced_in_window = produced.load(Ordering::SeqCst) - start_produced;
    stop.store(true, Ordering::SeqCst);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    follower
        .join()
        .map_err(|_| anyhow::anyhow!("the ingester panicked"))??;
    server.stop().await;
    let half = lags.len() / 2;
    Ok(json!({
        "phase": "ingest",
        "catch_up_epochs": CATCH_UP_EPOCHS, "catch_up_objects": synced.objects,
        "catch_up_leader_objects": catch_up_objects, "catch_up_seconds": catch_up_seconds,
        "catch_up_objects_per_s": synced.objects as f64 / catch_up_seconds,
        "catch_up_rows": synced.rows, "catch_up_rows_per_s": synced.rows as f64 / catch_up_seconds,
        "seconds": window, "objects": objects,
        "objects_per_s": objects as f64 / window, "rows_per_s": rows as f64 / window,
        "leader_objects_per_s": produced_in_window as f64 / window,
        "target_objects_per_s": target_rate, "churn": churn,
        "lag_epochs_max": max_lag, "lag_epochs_end": lags.last().copied().unwrap_or(0),
        "lag_epochs_first_half_max": lags[..half].iter().max().copied().unwrap_or(0),
        "lag_epochs_second_half_max": lags[half..].iter().max().copied().unwrap_or(0),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Calls `call` from `in_flight` threads for `seconds`; returns calls/s.
fn load(
    in_flight: usize,
    seconds: u64,
    call: impl Fn(u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..in_flight)
            .map(|worker| {
                let (done, call) = (&done, &call);
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut n = worker as u64;
                    while Instant::now() < deadline {
                        call(n)?;
                        done.fetch_add(1, Ordering::Relaxed);
                        n = n
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// The requests and requests/s of `wrk` POSTing random ones of `bodies` to
/// `url` over `connections` kept-alive connections, failing if any answer
/// was not a JSON-RPC result. wrk is the load generator of the other HTTP benchmarks
/// (follower/bench/rpc-vs-nginx): its own cost per request is small, so the
/// follower gets the machine, as it would in production.
async fn wrk_counted(
    url: &str,
    bodies: &[serde_json::Value],
    seconds: u64,
    connections: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bodies");
    let lines: Vec<String> = bodies.iter().map(|body| body.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/random-post.lua");
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "-s",
            script,
            url,
        ])
        .env("BODIES", &file)
        .output()
        .await
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .with_context(|| format!("no \"{prefix}\" in wrk's output: {text}"))
    };
    let errors = field("errors")?;
    anyhow::ensure!(errors == 0.0, "{errors} answers were not results: {text}");
    // "  123456 requests in 10.00s, 45.67MB read"
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse::<f64>().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    Ok((requests, field("Requests/sec:")?))
}

/// [`wrk_counted`]'s rate alone.
async fn wrk(
    url: &str,
    bodies: &[serde_json::Value],
    seconds: u64,
    connections: usize,
) -> anyhow::Result<f64> {
    Ok(wrk_counted(url, bodies, seconds, connections).await?.1)
}

async fn reads(
    car: &str,
    keyspace: &str,
    seconds: u64,
    in_flight: usize,
) -> anyhow::Result<serde_json::Value> {
    let (roots, blocks) = read_car(car)?;
    let cids: Arc<Vec<Cid>> = Arc::new(blocks.into_iter().map(|(cid, _)| cid).collect());
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking({
            let keyspace = keyspace.to_owned();
            move || CqlStore::connect(&cql_options(&keyspace)?).map_err(anyhow::Error::from)
        })
        .await??,
    );
    let head_height = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.head())
            .await??
            .map_or(0, |head| head.height)
    };
    let server = start(
        store.clone(),
        ServeOptions {
            cache_bytes: 0,
            listen: "127.0.0.1:0".parse()?,
            ..ServeOptions::local(Network::Devnet)
        },
    )
    .await?;
    let url = format!("http://{}/rpc/v1", server.rpc_address);
    let _ = TipSetKey(roots);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    let call = |body: &serde_json::Value| -> anyhow::Result<serde_json::Value> {
        let text = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())?
            .body_mut()
            .read_to_string()?;
        let answer: serde_json::Value = serde_json::from_str(&text)?;
        anyhow::ensure!(answer.get("result").is_some(), "{answer}");
        Ok(answer)
    };
    let read_obj: Vec<serde_json::Value> = cids
        .iter()
        .map(|cid| json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainReadObj", "params": [{"/": cid.to_string()}]}))
        .collect();
    // The tipsets' keys first (unmeasured): the measured calls are
    // StateGetActor only, of the devnet's accounts at every height.
    let get_actor: Vec<serde_json::Value> = tokio::task::block_in_place(|| {
        let mut requests = Vec::new();
        for height in 1..=head_height.max(1) {
            let tipset = call(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainGetTipSetByHeight", "params": [height, null]}),
            )?;
            for index in 1..8 {
                let actor = Account::derive(0, index)?.address.to_string();
                requests.push(json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.StateGetActor", "params": [actor, tipset["result"]["Cids"]]}));
            }
        }
        anyhow::Ok(requests)
    })?;
    // Some of each answer before the clock starts.
    tokio::task::block_in_place(|| {
        read_obj
            .iter()
            .take(100)
            .chain(get_actor.iter().take(100))
            .try_for_each(|body| call(body).map(drop))
    })?;
    let read_obj_per_s = wrk(&url, &read_obj, seconds, in_flight).await?;
    // Store reads per StateGetActor, from the follower's own count of
    // blocks read from the store (its cache is off: every read counts).
    let metrics_url = format!("http://{}/debug/metrics", server.rpc_address);
    let store_reads = || -> anyhow::Result<f64> {
        let text = agent
            .get(&metrics_url)
            .call()?
            .body_mut()
            .read_to_string()?;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(lotus_follower_interfaces::metrics::CACHE_MISSES_TOTAL)
            })
            .and_then(|value| value.trim().parse().ok())
            .context("no store-read count in the follower's metrics")
    };
    let reads_before = tokio::task::block_in_place(store_reads)?;
    let (get_actor_calls, get_actor) = wrk_counted(&url, &get_actor, seconds, in_flight).await?;
    let reads_per_get_actor =
        (tokio::task::block_in_place(store_reads)? - reads_before) / get_actor_calls;
    // The store alone (no RPC, no HTTP): the same blocks through `get_block`.
    let store_reads = tokio::task::block_in_place(|| {
        load(in_flight, seconds, |n| {
            let cid = cids[(n % cids.len() as u64) as usize];
            anyhow::ensure!(store.get_block(&cid)?.is_some(), "{cid} is not stored");
            Ok(())
        })
    })?;
    server.stop().await;

    // The RPC layer's own ceiling: ChainReadObj answered from a follower's
    // response cache, with no database in the answer (the same HTTP, JSON
    // and wrk; a subset of the blocks, each asked once before the clock).
    let cached = start(
        store.clone(),
        ServeOptions {
            cache_bytes: 1 << 30,
            listen: "127.0.0.1:0".parse()?,
            ..ServeOptions::local(Network::Devnet)
        },
    )
    .await?;
    let cached_url = format!("http://{}/rpc/v1", cached.rpc_address);
    let subset = &read_obj[..read_obj.len().min(5000)];
    // The server learns the head (its cache key) within its poll interval.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        subset.iter().try_for_each(|body| {
            agent
                .post(&cached_url)
                .header("content-type", "application/json")
                .send(body.to_string())
                .map(drop)
        })
    })?;
    let cached_read_obj = wrk(&cached_url, subset, seconds, in_flight).await?;
    cached.stop().await;

    // The raw SELECTs: the same blocks, from the same table, as the same rows.
    let session = session(keyspace).await?;
    let mut select = session
        .prepare("SELECT chunk, chunks, data FROM blocks WHERE k = ?")
        .await?;
    select.set_consistency(scylla::statement::Consistency::Quorum);
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    futures::future::try_join_all((0..in_flight).map(|worker| {
        let (session, select, done, cids) = (&session, &select, &done, &cids);
        async move {
            let mut n = worker as u64;
            while Instant::now() < deadline {
                let cid = cids[(n % cids.len() as u64) as usize];
                session
                    .execute_unpaged(select, (cid.hash().to_bytes(),))
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            Ok::<_, anyhow::Error>(())
        }
    }))
    .await?;
    let selects = done.load(Ordering::Relaxed) as f64 / seconds as f64;
    Ok(json!({
        "phase": "reads", "in_flight": in_flight, "seconds": seconds,
        "chain_read_obj_per_s": read_obj_per_s, "state_get_actor_per_s": get_actor,
        "cached_chain_read_obj_per_s": cached_read_obj,
        "store_reads_per_state_get_actor": reads_per_get_actor,
        "store_get_block_per_s": store_reads,
        "raw_selects_per_s": selects, "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Creates (replication factor 1: one node) or drops a keyspace.
async fn keyspace(action: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let session = session("system").await?;
    let statement = match action {
        "create" => format!(
            "CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        "drop" => format!("DROP KEYSPACE IF EXISTS {name}"),
        other => anyhow::bail!("keyspace {other}?"),
    };
    session.query_unpaged(statement, ()).await?;
    Ok(json!({"phase": "keyspace", "action": action, "name": name}))
}

fn main() -> anyhow::Result<()> {
    lotus_follower::tls::install_default_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |at: usize| -> anyhow::Result<&str> {
        args.get(at).map(String::as_str).with_context(|| {
            format!("argument {at} is missing (see the header of follower/bench/write-path.rs)")
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = match arg(0)? {
        "keyspace" => runtime.block_on(keyspace(arg(1)?, arg(2)?))?,
        "gen" => generate(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?)?,
        "raw" => runtime.block_on(raw(arg(1)?, arg(2)?, arg(3)?.parse()?))?,
        "import" => import_phase(arg(1)?, arg(2)?)?,
        "ingest" => runtime.block_on(ingest_phase(
            arg(1)?,
            arg(2)?.parse()?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
        ))?,
        "reads" => runtime.block_on(reads(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?))?,
        other => anyhow::bail!("unknown phase {other}"),
    };
    println!("{result}");
    Ok(())
}
