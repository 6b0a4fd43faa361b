//! A follower serving from the shared CQL store: export40.car imported by a
//! writer role, served by a role granted only SELECT, with the same answers
//! as the embedded store; the SELECT-only role cannot write.

use std::{sync::Arc, time::Duration};

use lotus_follower::{
    chain::{Network, upgrades::Schedule},
    import::import,
    query::Chain,
    rpc::Limits,
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
        let server = start(
            follower,
            ServeOptions {
                network,
                schedule: Schedule::of(network),
                block_delay_secs: network.block_delay_secs(),
                listen: "127.0.0.1:0".parse()?,
                metrics_listen: None,
                cache_bytes: 16 << 20,
                limits: Limits::default(),
                max_lookback_epochs: 2880,
                max_wait: Duration::from_secs(1),
                pool: None,
            },
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
        server.stop().await;

        keyspace.drop(&admin).await?;
        reader.drop(&admin).await
    })
    .await
}
