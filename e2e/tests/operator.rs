//! The operator's controller on the real API server (run in-process, limited to
//! the test's namespace): the minimal resource becomes a fleet whose pods kwok
//! makes Ready, reported in the status.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Service};
use kube::{
    Api, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use lotus_follower_e2e::{Check, TestBed, TestNamespace, install_crd, wait_until};
use lotus_follower_operator::crd::LotusFollowerCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_resource_becomes_a_running_fleet() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        install_crd(&client, &LotusFollowerCluster::crd()).await?;
        let ns = TestNamespace::create(&client, "operator").await?;
        let namespace = ns.name.clone();
        let controller_client = client.clone();
        let controller = tokio::spawn(async move {
            lotus_follower_operator::reconcile::run(controller_client, Some(&namespace)).await;
        });

        let minimal = json!({
            "apiVersion": "lotus-follower.io/v1alpha1",
            "kind": "LotusFollowerCluster",
            "metadata": {"name": "demo"},
            "spec": {
                "network": "calibnet",
                "database": {"external": {"contactPoints": ["yb-tserver.db.svc:9042"], "keyspace": "lotus_calibnet"}},
                "leader": {"external": {"url": "http://lotus.lotus.svc:1234/rpc/v1"}},
                "followers": {"replicas": 2},
            },
        });
        let clusters = ns.api::<LotusFollowerCluster>();
        clusters.create(&PostParams::default(), &serde_json::from_value(minimal)?).await?;

        let condition = |status: &lotus_follower_operator::crd::LotusFollowerClusterStatus, type_: &str| {
            status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
        };
        // Workloads available, no ingester process holding the Lease yet: Syncing.
        let status = wait_until("the fleet to report 2/2 followers", Duration::from_secs(90), || async {
            let status = clusters.get_status("demo").await?.status.unwrap_or_default();
            let followers = status.followers.clone().unwrap_or_default();
            Ok(Check::when(followers == "2/2" && status.phase.as_deref() == Some("Syncing"), status, followers))
        })
        .await?;
        println!("LotusFollowerCluster demo: phase {:?}, followers {:?}, endpoint {:?}", status.phase, status.followers, status.endpoint);
        assert_eq!(condition(&status, "Ready"), Some(("True".into(), "Available".into())));
        assert_eq!(condition(&status, "HeadInSync"), Some(("Unknown".into(), "NoIngester".into())));

        // The ingester's ServiceAccount takes the Lease and reports a recent head,
        // a synced leader and a reachable store (its Role suffices for that).
        let ingester = bed.service_account_client(&ns, "demo-ingester").await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease_patch = json!({
            "metadata": {"annotations": {
                "lotus-follower.io/head-height": "1234",
                "lotus-follower.io/head-time": now.to_string(),
                "lotus-follower.io/leader": "ok",
                "lotus-follower.io/store": "ok",
            }},
            // MicroTime's own serialization: the API server wants exactly microseconds.
            "spec": {"holderIdentity": "ingester-0", "leaseDurationSeconds": 30,
                     "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now)},
        });
        Api::<Lease>::namespaced(ingester.clone(), &ns.name)
            .patch("demo-ingester", &PatchParams::default(), &Patch::Merge(&lease_patch))
            .await?;
        // Touch the resource so the controller looks again now (it does not watch Leases yet).
        clusters
            .patch("demo", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})))
            .await?;
        let status = wait_until("HeadInSync from the ingester's Lease", Duration::from_secs(30), || async {
            let status = clusters.get_status("demo").await?.status.unwrap_or_default();
            let phase = status.phase.clone().unwrap_or_default();
            Ok(Check::when(phase == "Running", status, phase))
        })
        .await?;
        assert_eq!(condition(&status, "HeadInSync"), Some(("True".into(), "HeadRecent".into())));
        assert_eq!(condition(&status, "LeaderReady"), Some(("True".into(), "LeaderSynced".into())));
        assert_eq!(condition(&status, "DatabaseReady"), Some(("True".into(), "StoreReachable".into())));
        assert_eq!(status.head_height, Some(1234));
        println!("with the ingester's Lease: phase {:?}, head {:?}", status.phase, status.head_height);
        // The ingester's Role reaches no other Lease.
        let other = Api::<Lease>::namespaced(ingester, &ns.name).get("someone-else").await;
        assert!(matches!(other, Err(kube::Error::Api(ref status)) if status.code == 403), "{other:?}");
        assert_eq!(status.endpoint.as_deref(), Some(format!("http://demo-rpc.{}.svc:1234/rpc/v1", ns.name).as_str()));
        assert!(ns.api::<Deployment>().get_opt("demo-ingester").await?.is_some());
        assert!(ns.api::<Service>().get_opt("demo-rpc").await?.is_some());

        // A deleted child comes back.
        ns.api::<Service>().delete("demo-rpc", &Default::default()).await?;
        let services: Api<Service> = ns.api();
        wait_until("the deleted Service to come back", Duration::from_secs(60), || async {
            let service = services.get_opt("demo-rpc").await?;
            let back = service.is_some_and(|s| s.metadata.deletion_timestamp.is_none());
            Ok(Check::when(back, (), "absent"))
        })
        .await?;
        println!("a deleted child Service was recreated");
        controller.abort();
        ns.delete().await
    })
    .await
}
