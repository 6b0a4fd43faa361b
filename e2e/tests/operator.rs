//! The operator's controller on the real API server (run in-process, limited to
//! the test's namespace): the minimal resource becomes a fleet whose pods kwok
//! makes Ready, reported in the status.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{Api, CustomResourceExt, api::PostParams};
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

        let status = wait_until("the fleet to report 2/2 followers", Duration::from_secs(90), || async {
            let status = clusters.get_status("demo").await?.status.unwrap_or_default();
            let followers = status.followers.clone().unwrap_or_default();
            Ok(Check::when(followers == "2/2" && status.phase.as_deref() == Some("Running"), status, followers))
        })
        .await?;
        println!("LotusFollowerCluster demo: phase {:?}, followers {:?}, endpoint {:?}", status.phase, status.followers, status.endpoint);
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
