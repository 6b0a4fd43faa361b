//! A real ingester (in-process, as the `<name>-ingester` ServiceAccount the
//! operator made, with only its Role) following a devnet leader: it holds the
//! Lease, publishes the head on it, and the operator reports the fleet
//! Running with that head; a standby cannot take the Lease until it is given
//! up, and then takes it with a higher fencing term.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, CustomResourceExt,
    api::{DeleteParams, PostParams},
};
use lotus_follower::{
    chain::Network,
    devnet::{Devnet, DevnetOptions},
    ingest::{
        Ingester,
        leader::Leader,
        lease::{LeaseHolder, Report},
    },
    metrics::Metrics,
    rpc::auth::Auth,
    serve::{ServeOptions, start},
    store::{Store, embedded::EmbeddedStore},
};
use lotus_follower_e2e::{Check, TestBed, TestNamespace, TestOperator, install_crd, wait_until};
use lotus_follower_operator::crd::LotusFollowerCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ingester_holds_the_lease_and_the_fleet_runs() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;
        let ns = TestNamespace::create(&client, "ingester").await?;
        let operator = TestOperator::start(&bed, &client, &ns, "operator-a", Duration::from_secs(2)).await?;
        let resource = json!({
            "apiVersion": "lotus-follower.io/v1alpha1",
            "kind": "LotusFollowerCluster",
            "metadata": {"name": "demo"},
            "spec": {
                "network": "devnet",
                "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_devnet"}},
                "leader": {"external": {"url": "http://devnet.lotus.svc:1234/rpc/v1"}},
                "followers": {"replicas": 1},
            },
        });
        let clusters = ns.api::<LotusFollowerCluster>();
        clusters.create(&PostParams::default(), &serde_json::from_value(resource)?).await?;
        let leases: Api<Lease> = ns.api();
        wait_until("the operator to create the ingester's Lease", Duration::from_secs(30), || async {
            Ok(Check::when(leases.get_opt("demo-ingester").await?.is_some(), (), "absent"))
        })
        .await?;

        // A devnet whose head is now: ten epochs from a genesis five minutes ago.
        let leader_dir = tempfile::tempdir()?;
        let leader_store = Arc::new(EmbeddedStore::open(leader_dir.path())?);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let mut devnet = Devnet::open(leader_store.clone(), DevnetOptions::default(), Some(now - 300))?;
        for height in 1..=10 {
            devnet.produce(height)?;
        }
        let leader = start(
            leader_store,
            ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), Auth::random()?),
        )
        .await?;

        // The ingester, with nothing but its ServiceAccount's Role.
        let account = bed.service_account_client(&ns, "demo-ingester").await?;
        let follower_dir = tempfile::tempdir()?;
        let follower_store = Arc::new(EmbeddedStore::open(follower_dir.path())?);
        let ingester = Arc::new(Ingester::new(
            follower_store.clone(),
            Leader::new(&format!("http://{}/rpc/v1", leader.rpc_address), None, Duration::from_secs(10)),
            Network::Devnet,
            2880,
            0,
            Metrics::new()?,
        ));
        let holder = LeaseHolder::new(Api::namespaced(account.clone(), &ns.name), "demo-ingester", "ingester-a");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(ingester.run(Duration::from_millis(200), Some(holder), stopped));

        let status = wait_until("the fleet to run with the ingester's head", Duration::from_secs(60), || async {
            let status = clusters.get_status("demo").await?.status.unwrap_or_default();
            let seen = format!("{:?} head {:?}", status.phase, status.head_height);
            Ok(Check::when(status.phase.as_deref() == Some("Running") && status.head_height == Some(10), status, seen))
        })
        .await?;
        let conditions: Vec<_> = status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect();
        println!("with a real ingester: phase {:?}, head {:?}, {conditions:?}", status.phase, status.head_height);
        for wanted in ["HeadInSync", "LeaderReady", "DatabaseReady"] {
            assert!(conditions.iter().any(|(t, s, _)| *t == wanted && *s == "True"), "{wanted}: {conditions:?}");
        }
        let lease = leases.get("demo-ingester").await?.spec.unwrap_or_default();
        assert_eq!(lease.holder_identity.as_deref(), Some("ingester-a"));
        let term = u64::try_from(lease.lease_transitions.unwrap_or(0))?;
        let head = tokio::task::spawn_blocking(move || follower_store.head()).await??;
        assert_eq!(head.map(|head| head.term), Some(term), "heads carry the Lease's fencing term");

        // A standby gets nothing while the Lease is held ...
        let standby = LeaseHolder::new(Api::namespaced(account, &ns.name), "demo-ingester", "ingester-b");
        let report = Report { head_height: None, head_time: None, leader: "ok".into(), store: "ok".into() };
        assert_eq!(standby.renew(&report).await?, None);
        // ... and takes it, with a higher term, once the holder gives it up.
        let _ = stop.send(true);
        running.await?;
        let taken = standby.renew(&report).await?;
        println!("the standby took the Lease with term {taken:?} (the first holder's was {term})");
        assert!(taken.is_some_and(|next| next > term), "{taken:?}");

        leader.stop().await;
        clusters.delete("demo", &DeleteParams::default()).await?;
        operator.stop().await?;
        ns.delete().await
    })
    .await
}
