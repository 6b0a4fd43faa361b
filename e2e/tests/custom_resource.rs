//! A CRD generated from a schemars-derived Rust type, as the operator's will be,
//! is accepted by the API server, enforces its schema, and an object of it is
//! created, read and watched with kube-rs.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, CustomResource, CustomResourceExt, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use lotus_follower_e2e::{TestBed, TestNamespace, install_crd};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "e2e.lotus-follower.io",
    version = "v1",
    kind = "SmokeWidget",
    namespaced
)]
struct SmokeWidgetSpec {
    size: u32,
    label: String,
}

#[tokio::test]
async fn crd_from_a_rust_type_round_trips() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let client = bed.kube_client().await?;
        let crd = SmokeWidget::crd();
        let crd_name = crd.name_any();
        install_crd(&client, &crd).await?;
        println!("CRD {crd_name} established");

        let ns = TestNamespace::create(&client, "crd").await?;
        let widgets = ns.api::<SmokeWidget>();
        let spec = SmokeWidgetSpec {
            size: 3,
            label: "first".into(),
        };
        widgets
            .create(&PostParams::default(), &SmokeWidget::new("w", spec.clone()))
            .await?;
        let read = widgets.get("w").await?;
        assert_eq!(read.spec, spec);
        println!("created and read back SmokeWidget w: {:?}", read.spec);

        // The generated schema is enforced: a string where an integer belongs is refused.
        let bad = serde_json::json!({
            "apiVersion": "e2e.lotus-follower.io/v1", "kind": "SmokeWidget",
            "metadata": {"name": "bad"}, "spec": {"size": "three", "label": "x"},
        });
        let refused = Api::<kube::api::DynamicObject>::namespaced_with(
            client.clone(),
            &ns.name,
            &kube::api::ApiResource::erase::<SmokeWidget>(&()),
        )
        .create(&PostParams::default(), &serde_json::from_value(bad)?)
        .await;
        match refused {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                println!("invalid SmokeWidget refused: {}", status.message)
            }
            other => {
                anyhow::bail!("an invalid SmokeWidget was not refused by the schema: {other:?}")
            }
        }

        // A watch sees a later change to the object.
        let mut events = watcher(
            widgets.clone(),
            watcher::Config::default().fields("metadata.name=w"),
        )
        .applied_objects()
        .boxed();
        let first = events.try_next().await?.map(|w| w.spec.label);
        assert_eq!(first.as_deref(), Some("first"));
        let patch = serde_json::json!({"spec": {"label": "second"}});
        widgets
            .patch("w", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(widget) = events.try_next().await? {
                if widget.spec.label == "second" {
                    return anyhow::Ok(widget);
                }
            }
            anyhow::bail!("the watch ended")
        })
        .await??;
        println!(
            "watch saw SmokeWidget w change to label {:?}",
            seen.spec.label
        );
        ns.delete().await
    })
    .await
}
