//! A database outage under a steady read load: a follower reads Cassandra
//! through a TCP proxy this test owns (the shared server keeps running for the
//! other tests); the proxy is cut, then restored. During the outage calls fail
//! with errors that say the store is unavailable; before and after, every
//! answer equals the same call on an embedded store holding the same chain;
//! never, at any time, is an answer wrong (a different result, or an error
//! claiming data is "not in the store").

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lotus_follower::{
    chain::Network,
    import::import,
    query::Chain,
    rpc::protocol,
    serve::{ServeOptions, start},
    store::{
        Store,
        cql::{CqlOptions, CqlStore},
        embedded::EmbeddedStore,
    },
    testdata,
};
use lotus_follower_e2e::{TcpProxy, TestBed, TestKeyspace, http_get};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    unavailable: usize,
    wrong: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_gives_errors_then_full_recovery_never_wrong_answers()
-> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let Some(car) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "outage").await?;
        let car = car.to_string_lossy().into_owned();
        let proxy = TcpProxy::start(&bed.cql_node).await?;

        // The chain in Cassandra (written directly) and in an embedded store
        // (the reference answers).
        let direct = bed.cql_store_options(&keyspace.name);
        let through_proxy = CqlOptions {
            contact_points: vec![proxy.address.to_string()],
            // Short, so calls during the outage fail fast.
            request_timeout: Duration::from_secs(1),
            ..direct.clone()
        };
        let reference_dir = tempfile::tempdir()?;
        let (reference, follower) = tokio::task::spawn_blocking({
            let (car, reference_path) = (car.clone(), reference_dir.path().to_owned());
            move || -> anyhow::Result<(Arc<EmbeddedStore>, Arc<CqlStore>)> {
                import(&CqlStore::connect(&direct)?, &car, Network::Mainnet, &mut |_| {})?;
                let reference = EmbeddedStore::open(&reference_path)?;
                import(&reference, &car, Network::Mainnet, &mut |_| {})?;
                Ok((Arc::new(reference), Arc::new(CqlStore::connect(&through_proxy)?)))
            }
        })
        .await??;

        // The calls of the load, with a message whose receipt exists: during
        // an outage StateSearchMsg used to answer "receipts … are not in the store".
        let calls = tokio::task::spawn_blocking({
            let reference = reference.clone();
            move || -> anyhow::Result<Vec<Value>> {
                let chain = Chain::new(reference.as_ref(), Network::Mainnet);
                let head = chain.head()?;
                let mut calls = vec![json!(["Filecoin.ChainHead", []])];
                for height in (0..=head.height()).step_by(3) {
                    calls.push(json!(["Filecoin.ChainGetTipSetByHeight", [height, null]]));
                }
                let mut searches = 0;
                for height in (1..head.height()).rev() {
                    let tipset = chain.tipset_by_height(height, &head)?;
                    let Ok(messages) = chain.tipset_messages(&tipset) else { continue };
                    for message in messages.iter().take(2) {
                        let cid = json!({"/": message.cid.to_string()});
                        calls.push(json!(["Filecoin.StateSearchMsg", [null, cid, -1, true]]));
                        calls.push(json!(["Filecoin.ChainGetMessage", [cid]]));
                        searches += 1;
                    }
                    let block = json!({"/": tipset.key().cids()[0].to_string()});
                    // Awaited on the server's runtime, without a blocking thread.
                    calls.push(json!(["Filecoin.ChainReadObj", [block]]));
                    calls.push(json!(["Filecoin.ChainGetParentReceipts", [block]]));
                    calls.push(json!(["Filecoin.ChainGetBlockMessages", [block]]));
                    if searches >= 6 {
                        break;
                    }
                }
                calls.push(json!(["Filecoin.StateGetActor", ["f01", null]]));
                Ok(calls)
            }
        })
        .await??;

        // Tiny caches: the load must reach the store, not the caches.
        let options = ServeOptions { cache_bytes: 4096, ..ServeOptions::local(Network::Mainnet) };
        let reference_server = start(reference.clone(), options.clone()).await?;
        let server = start(follower.clone() as Arc<dyn Store>, options).await?;
        let (ours, theirs) = (
            format!("http://{}/rpc/v1", server.rpc_address),
            format!("http://{}/rpc/v1", reference_server.rpc_address),
        );
        let mut expected = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            let body = json!({"jsonrpc": "2.0", "id": index, "method": call[0], "params": call[1]});
            let (_, answer) = testdata::post(&theirs, body.to_string(), None).await?;
            expected.push(answer);
        }
        let found = expected.iter().filter(|a| a["method"].is_null() && a["result"].is_object()).count();
        println!("{} calls in the load, {found} with object results on the reference", calls.len());

        // The load: 4 clients cycling through the calls until told to stop.
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = Arc::new(expected);
        let calls = Arc::new(calls);
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (tally, stop, expected, calls, url) =
                    (tally.clone(), stop.clone(), expected.clone(), calls.clone(), ours.clone());
                tokio::spawn(async move {
                    let mut index = client;
                    while !stop.load(Ordering::SeqCst) {
                        let i = index % calls.len();
                        index += 1;
                        let body = json!({"jsonrpc": "2.0", "id": i, "method": calls[i][0], "params": calls[i][1]});
                        let Ok((_, answer)) = testdata::post(&url, body.to_string(), None).await else {
                            tally.lock().map(|mut t| t.wrong.push(format!("no HTTP answer to {}", calls[i]))).ok();
                            continue;
                        };
                        let reference = &expected[i];
                        let mut tally = match tally.lock() {
                            Ok(tally) => tally,
                            Err(_) => return,
                        };
                        if answer == *reference {
                            tally.ok += 1;
                        } else if answer["error"]["code"] == json!(protocol::STORE_UNAVAILABLE)
                            || answer["error"]["code"] == json!(protocol::TIMEOUT)
                        {
                            tally.unavailable += 1;
                        } else {
                            tally.wrong.push(format!("{}: got {answer}, the reference has {reference}", calls[i]));
                        }
                    }
                })
            })
            .collect();
        let snapshot = |tally: &Arc<Mutex<Tally>>| -> (usize, usize, usize) {
            tally.lock().map(|t| (t.ok, t.unavailable, t.wrong.len())).unwrap_or_default()
        };

        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = snapshot(&tally);
        println!("before the outage: {} right, {} unavailable, {} wrong", before.0, before.1, before.2);
        assert!(before.0 > 0 && before.1 == 0, "before the outage every call answers: {before:?}");

        proxy.cut();
        let cut_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, _) = http_get(server.rpc_address, "/health/readyz").await?;
        assert_eq!(status, 503, "not ready while the store is unreachable");
        let during = snapshot(&tally);
        println!(
            "during a {:?} outage: {} right (from caches), {} unavailable, {} wrong",
            cut_at.elapsed(),
            during.0 - before.0,
            during.1 - before.1,
            during.2
        );
        assert!(during.1 > before.1, "the outage shows as errors");

        proxy.restore();
        let restored = Instant::now();
        // Recovered once a whole second passes with every call answered right.
        let recovered = loop {
            let at = snapshot(&tally);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = snapshot(&tally);
            if after.1 == at.1 && after.0 > at.0 {
                break restored.elapsed();
            }
            anyhow::ensure!(restored.elapsed() < Duration::from_secs(60), "no recovery within 60 s: {after:?}");
        };
        let settled = snapshot(&tally);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = snapshot(&tally);
        println!(
            "recovered {recovered:?} after the store came back; then {} right, {} unavailable in 3 s",
            after.0 - settled.0,
            after.1 - settled.1
        );
        assert_eq!(after.1, settled.1, "full recovery: no errors once recovered");
        let (status, _) = http_get(server.rpc_address, "/health/readyz").await?;
        assert_eq!(status, 200);

        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await?;
        }
        let wrong = tally.lock().map(|t| t.wrong.clone()).unwrap_or_default();
        assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
        server.stop().await;
        reference_server.stop().await;
        keyspace.drop(&admin).await
    })
    .await
}
