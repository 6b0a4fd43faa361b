//! Pure decisions about how a change reaches the followers: the replica
//! hand-over between the operator and the HPA, and the ingester going first on
//! an image change (its schema migrations must land before followers read).

use k8s_openapi::api::apps::v1::Deployment;

/// The field manager that holds `spec.replicas` while the HPA takes over, so
/// the operator can stop managing the field without the API server resetting it.
pub const HANDOVER_FIELD_MANAGER: &str = "lotus-follower-operator-handover";

/// Whether `manager`'s server-side apply owns the Deployment's `spec.replicas`.
pub fn owns_replicas(live: &Deployment, manager: &str) -> bool {
    live.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .any(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

/// The replicas the hand-over manager pins before the operator lets go: the
/// current count, but never below the HPA's minimum.
pub fn handover_replicas(live: &Deployment, min_replicas: i32) -> i32 {
    live.spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(0)
        .max(min_replicas)
}

fn image(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .as_deref()
}

fn set_image(deployment: &mut Deployment, image: &str) {
    if let Some(container) = deployment
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.containers.first_mut())
    {
        container.image = Some(image.to_owned());
    }
}

/// Whether the live ingester runs the desired image on every replica: the
/// Deployment controller has seen the latest spec, every replica is updated and
/// no old one is left (with surge 1 / unavailable 0, old pods go only once the
/// new ones are available). An ingester that is merely unhealthy, not rolling,
/// does not hold the followers back.
pub fn ingester_rolled_out(desired: &Deployment, live: Option<&Deployment>) -> bool {
    let Some(live) = live else {
        return false;
    };
    if image(live) != image(desired) {
        return false;
    }
    let wanted = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &live.status else {
        return false;
    };
    let updated = status.updated_replicas.unwrap_or(0);
    status.observed_generation >= live.metadata.generation
        && updated >= wanted
        && status.replicas.unwrap_or(0) == updated
}

/// Keeps the followers on their live image until the ingester has rolled out
/// its new one. Returns whether the image was held back.
pub fn hold_followers_image(
    followers: &mut Deployment,
    live_followers: Option<&Deployment>,
    ingester_rolled_out: bool,
) -> bool {
    let Some(live_image) = live_followers.and_then(image) else {
        return false;
    };
    if ingester_rolled_out || image(followers) == Some(live_image) {
        return false;
    }
    let live_image = live_image.to_owned();
    set_image(followers, &live_image);
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use serde_json::json;

    use super::*;

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).expect("a Deployment")
    }

    fn with_image(image: &str, generation: i64, status: Option<DeploymentStatus>) -> Deployment {
        let mut deployment = deployment(json!({
            "metadata": {"name": "demo-ingester", "generation": generation},
            "spec": {
                "replicas": 1,
                "selector": {},
                "template": {"spec": {"containers": [{"name": "ingester", "image": image}]}},
            },
        }));
        deployment.status = status;
        deployment
    }

    fn done(generation: i64) -> Option<DeploymentStatus> {
        Some(DeploymentStatus {
            observed_generation: Some(generation),
            replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..DeploymentStatus::default()
        })
    }

    #[test]
    fn replicas_ownership_is_read_from_managed_fields() {
        let live = deployment(json!({
            "metadata": {"managedFields": [
                {"manager": "lotus-follower-operator", "operation": "Apply",
                 "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update",
                 "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            ]},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
        }));
        assert!(owns_replicas(&live, "lotus-follower-operator"));
        assert!(!owns_replicas(&live, HANDOVER_FIELD_MANAGER));
        // An Update by the same name is not an apply we could release.
        assert!(!owns_replicas(&live, "kube-controller-manager"));
        assert_eq!(handover_replicas(&live, 2), 3);
        assert_eq!(handover_replicas(&live, 5), 5);
    }

    #[test]
    fn the_followers_wait_for_the_ingester_image() {
        let desired_ingester = with_image("lf:2", 2, None);
        let mut followers = with_image("lf:2", 1, None);
        let live_followers = with_image("lf:1", 1, done(1));

        // The ingester still runs the old image: hold the followers.
        let old_ingester = with_image("lf:1", 1, done(1));
        let rolled = ingester_rolled_out(&desired_ingester, Some(&old_ingester));
        assert!(!rolled);
        assert!(hold_followers_image(
            &mut followers,
            Some(&live_followers),
            rolled
        ));
        assert_eq!(image(&followers), Some("lf:1"));

        // New image but the rollout is not finished (generation not observed).
        let rolling = with_image("lf:2", 2, done(1));
        assert!(!ingester_rolled_out(&desired_ingester, Some(&rolling)));

        // Rolled out: the followers take the new image.
        let mut followers = with_image("lf:2", 1, None);
        let rolled_out = with_image("lf:2", 2, done(2));
        let rolled = ingester_rolled_out(&desired_ingester, Some(&rolled_out));
        assert!(rolled);
        assert!(!hold_followers_image(
            &mut followers,
            Some(&live_followers),
            rolled
        ));
        assert_eq!(image(&followers), Some("lf:2"));

        // A new fleet has nothing to hold.
        assert!(!hold_followers_image(&mut followers, None, false));
    }
}
