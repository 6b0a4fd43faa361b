//! A follower serving from the shared CQL store: export40.car imported by a
//! writer role, served by a role granted only SELECT, with the same answers
//! as the embedded store; the SELECT-only role cannot write.

use std::{sync::Arc, time::Duration};

use lotus_follower::{
    chain::Network,
    import::import,
    query::Chain,
    serve::{ServeOptions, start},
    store::{
        Store, WriteBatch,
        cql::{CqlOptions, CqlStore},
        embedded::EmbeddedStore,
    },
    testdata,
};
use lotus_follower_e2e::{TestBed, TestKeyspace, TestRole};
use serde_json::json;

fn options(bed: &TestBed, keyspace: &str, user: &str, password: &str) -> CqlOptions {
    CqlOptions {
        contact_points: vec![bed.cql_node.clone()],
        keyspace: keyspace.to_owned(),
        username: Some(user.to_owned()),
        password: Some(password.to_owned()),
        request_timeout: Duration::from_secs(10),
        // The test bed's single Cassandra node is in the default datacenter.
        local_dc: Some("datacenter1".into()),
        address_map: Vec::new(),
        tls_ca_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_only_follower_serves_what_the_writer_imported() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    let Some(car) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "serving").await?;
        let reader = TestRole::create(&admin, "follower").await?;
        admin
            .query_unpaged(format!("GRANT SELECT ON KEYSPACE {} TO {}", keyspace.name, reader.name), ())
            .await?;
        let car = car.to_string_lossy().into_owned();

        // The writer imports into CQL; the same CAR goes into an embedded store to compare.
        let writer_options = options(&bed, &keyspace.name, &bed.cql_username, &bed.cql_password);
        let reference_dir = tempfile::tempdir()?;
        let (imported, reference) = tokio::task::spawn_blocking({
            let car = car.clone();
            let reference_path = reference_dir.path().to_owned();
            move || -> anyhow::Result<_> {
                let writer = CqlStore::connect(&writer_options)?;
                let started = std::time::Instant::now();
                let report = import(&writer, &car, Network::Mainnet, &mut |_| {})?;
                println!(
                    "imported export40.car into CQL: {} blocks, head {} in {:?}",
                    report.blocks,
                    report.head.height,
                    started.elapsed()
                );
                let reference = EmbeddedStore::open(&reference_path)?;
                import(&reference, &car, Network::Mainnet, &mut |_| {})?;
                Ok((report, reference))
            }
        })
        .await??;

        let follower: Arc<dyn Store> = {
            let follower_options = options(&bed, &keyspace.name, &reader.name, &reader.password);
            Arc::new(tokio::task::spawn_blocking(move || CqlStore::connect(&follower_options)).await??)
        };
        // Same chain through the query layer, every height.
        let compared = tokio::task::spawn_blocking({
            let follower = follower.clone();
            move || -> anyhow::Result<usize> {
                let ours = Chain::new(follower.as_ref(), Network::Mainnet);
                let theirs = Chain::new(&reference, Network::Mainnet);
                let (head, expected) = (ours.head()?, theirs.head()?);
                anyhow::ensure!(head.key() == expected.key(), "heads differ");
                for height in 0..=head.height() {
                    let a = ours.tipset_by_height(height, &head)?;
                    let b = theirs.tipset_by_height(height, &expected)?;
                    anyhow::ensure!(a.key() == b.key(), "tipsets at {height} differ");
                }
                // The SELECT-only role is refused a write, with the database's reason.
                let refused = follower.write(WriteBatch {
                    tipsets: vec![(1_000, head.key().clone())],
                    ..WriteBatch::default()
                });
                let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
                anyhow::ensure!(message.to_lowercase().contains("permission"), "the follower wrote: {message:?}");
                Ok(head.height() as usize + 1)
            }
        })
        .await??;
        println!("{compared} heights answered identically from CQL (SELECT-only role) and the embedded store");

        // And over RPC from the CQL store.
        let network = Network::Mainnet;
        let follower_store = follower.clone();
        let server = start(
            follower,
            ServeOptions { cache_bytes: 0, ..ServeOptions::local(network) },
        )
        .await?;
        let url = format!("http://{}/rpc/v1", server.rpc_address);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainHead", "params": []});
        let (_, head) = testdata::post(&url, body.to_string(), None).await?;
        assert_eq!(head["result"]["Height"], imported.head.height);
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": "Filecoin.ChainGetTipSetByHeight", "params": [30, null]});
        let (_, at30) = testdata::post(&url, body.to_string(), None).await?;
        assert_eq!(at30["result"]["Height"], 30);
        println!("over RPC from CQL: ChainHead {}, ChainGetTipSetByHeight(30) {}", head["result"]["Height"], at30["result"]["Height"]);
        // ChainReadObj awaits the CQL read on the server's runtime: the same
        // bytes as the store's synchronous read, and a clear error for a
        // block the store does not hold.
        let block = imported.head.tipset.cids()[0];
        let expected = tokio::task::spawn_blocking({
            let store = follower_store.clone();
            move || store.get_block(&block)
        })
        .await??
        .expect("the head block is stored");
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "Filecoin.ChainReadObj", "params": [{"/": block.to_string()}]});
        let (_, read) = testdata::post(&url, body.to_string(), None).await?;
        use base64::Engine;
        assert_eq!(read["result"], base64::engine::general_purpose::STANDARD.encode(&expected), "{read}");
        let (missing, _) = lotus_follower::chain::cbor::encode_block(&"a block no store holds")?;
        let body = json!({"jsonrpc": "2.0", "id": 4, "method": "Filecoin.ChainReadObj", "params": [{"/": missing.to_string()}]});
        let (_, refused) = testdata::post(&url, body.to_string(), None).await?;
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not") && message.contains(&missing.to_string()), "{refused}");
        println!("ChainReadObj from CQL: {} bytes of {block}; a missing block: {message}", expected.len());
        server.stop().await;

        keyspace.drop(&admin).await?;
        reader.drop(&admin).await
    })
    .await
}

/// The whole data path: a devnet leader, the ingester writing the shared CQL
/// store as the writer role, a follower serving it as a SELECT-only role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingester_fills_cql_from_a_devnet_and_a_follower_serves_it() -> anyhow::Result<()> {
    use lotus_follower::{
        devnet::{Devnet, DevnetOptions},
        ingest::{Ingester, leader::Leader},
        metrics::Metrics,
        rpc::auth::Auth,
    };

    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "ingest").await?;
        let reader = TestRole::create(&admin, "follower").await?;
        admin
            .query_unpaged(format!("GRANT SELECT ON KEYSPACE {} TO {}", keyspace.name, reader.name), ())
            .await?;

        // The leader: a devnet on its own embedded store, serving the leader API.
        let leader_dir = tempfile::tempdir()?;
        let leader_store = Arc::new(EmbeddedStore::open(leader_dir.path())?);
        let mut devnet = Devnet::open(leader_store.clone(), DevnetOptions::default(), Some(1_700_000_000))?;
        let devnet_options = ServeOptions::local(Network::Devnet);
        let leader = start(
            leader_store.clone(),
            devnet_options.clone().leader(Arc::new(devnet.pool()), Auth::random()?),
        )
        .await?;

        // The ingester writes CQL as the writer role.
        let writer_options = options(&bed, &keyspace.name, &bed.cql_username, &bed.cql_password);
        let leader_url = format!("http://{}/rpc/v1", leader.rpc_address);
        let ingester = Arc::new(
            tokio::task::spawn_blocking(move || -> anyhow::Result<Ingester> {
                Ok(Ingester::new(
                    Arc::new(CqlStore::connect(&writer_options)?),
                    Leader::new(&leader_url, None, Duration::from_secs(10)),
                    Network::Devnet,
                    2880,
                    1,
                    Metrics::new()?,
                ))
            })
            .await??,
        );
        for height in 1..=10 {
            devnet.produce(height)?;
        }
        let target = devnet.head().clone();
        let follower_options = options(&bed, &keyspace.name, &reader.name, &reader.password);
        let follower: Arc<dyn Store> =
            Arc::new(tokio::task::spawn_blocking(move || CqlStore::connect(&follower_options)).await??);
        let started = std::time::Instant::now();
        let mut written = 0;
        loop {
            let ingester = ingester.clone();
            if let Some(synced) = tokio::task::spawn_blocking(move || ingester.sync_once()).await?? {
                written += synced.objects;
            }
            let follower = follower.clone();
            let head = tokio::task::spawn_blocking(move || follower.head()).await??;
            if head.map(|head| head.tipset) == Some(target.key().clone()) {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the ingester did not reach the leader's head");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("ingested 10 devnet epochs into CQL: {written} blocks in {:?}", started.elapsed());

        // The follower, as the SELECT-only role, answers like the leader.
        let served = start(follower, devnet_options).await?;
        for (method, params) in [
            ("Filecoin.ChainHead", json!([])),
            ("Filecoin.ChainGetTipSetByHeight", json!([5, null])),
            ("Filecoin.StateGetActor", json!(["t01005", null])),
        ] {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
            let (_, ours) = testdata::post(&format!("http://{}/rpc/v1", served.rpc_address), body.clone(), None).await?;
            let (_, theirs) = testdata::post(&format!("http://{}/rpc/v1", leader.rpc_address), body, None).await?;
            assert!(ours["result"].is_object(), "{method}: {ours}");
            assert_eq!(ours["result"], theirs["result"], "{method}");
        }
        println!("the CQL follower answers ChainHead, ChainGetTipSetByHeight and StateGetActor like the leader");
        served.stop().await;
        leader.stop().await;
        keyspace.drop(&admin).await?;
        reader.drop(&admin).await
    })
    .await
}
