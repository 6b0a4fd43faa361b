//! A component's placement (`PodPlacement`: `nodeSelector`, `tolerations`,
//! `affinity`, `podAnnotations`) on its pod template: the first three on the pod
//! spec as the resource gives them, the annotations merged with the operator's own.
//!
//! Rules, shared by the ingester and the followers:
//! - unset fields stay unset (never an empty list or map), so a resource without
//!   placement builds the same pods as before and a resync finds nothing to write;
//! - tolerations and affinity are built in the form the API server stores: it
//!   drops empty strings, lists and label maps (Go's `omitempty`), so a resource
//!   saying `value: ""` or `matchExpressions: []` would otherwise differ from the
//!   live Deployment forever and be applied on every resync;
//! - the operator's own pod annotations win over the resource's on the same key.
//!   The operator sets none today; any it adds will live under
//!   `lotus-follower.io/`, which the schema already refuses in `podAnnotations`,
//!   so the override is a second guard (for resources stored before a schema
//!   change), not something a user can run into;
//! - the followers' hostname spread is a soft topology spread constraint, not an
//!   affinity: it stays beside the resource's affinity (see `followers.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::crd::PodPlacement;

/// Sets the placement's node selector, tolerations and affinity on `pod`.
pub fn place(pod: &mut PodSpec, placement: &PodPlacement) {
    pod.node_selector =
        (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone());
    pod.tolerations = (!placement.tolerations.is_empty())
        .then(|| placement.tolerations.iter().map(as_stored).collect());
    pod.affinity = placement.affinity.as_ref().map(as_stored);
}

/// `value` as the API server stores it: without the empty strings, empty lists
/// and empty `matchLabels` maps Go's `omitempty` drops. Empty objects stay: they
/// are structs the server keeps (`labelSelector: {}` selects every pod, unlike
/// no selector). A value that does not survive the round trip is kept as given.
fn as_stored<T: Serialize + DeserializeOwned + Clone>(value: &T) -> T {
    serde_json::to_value(value)
        .ok()
        .map(|mut json| {
            drop_empty(&mut json);
            json
        })
        .and_then(|json| serde_json::from_value(json).ok())
        .unwrap_or_else(|| value.clone())
}

fn drop_empty(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|key, field| match field {
                Value::String(text) => !text.is_empty(),
                Value::Array(items) => !items.is_empty(),
                // Label values may be empty; only the map as a whole goes.
                Value::Object(labels) if key == "matchLabels" => !labels.is_empty(),
                _ => true,
            });
            for (key, field) in fields.iter_mut() {
                if key != "matchLabels" {
                    drop_empty(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

/// The pod template's annotations: the resource's, then the operator's `own` on
/// top (the operator's win); `None` when there are none at all.
pub fn pod_annotations(
    placement: &PodPlacement,
    own: BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let mut annotations = placement.pod_annotations.clone();
    annotations.extend(own);
    (!annotations.is_empty()).then_some(annotations)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Affinity, Toleration};

    use super::*;

    fn placement() -> PodPlacement {
        PodPlacement {
            node_selector: BTreeMap::from([("node-pool".into(), "rpc".into())]),
            tolerations: vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("rpc".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            affinity: Some(Affinity::default()),
            pod_annotations: BTreeMap::from([
                ("example.com/team".into(), "rpc".into()),
                // Refused by today's schema; stands for a resource stored earlier.
                ("lotus-follower.io/config".into(), "theirs".into()),
            ]),
        }
    }

    #[test]
    fn an_empty_placement_leaves_the_pod_spec_unset() {
        let mut pod = PodSpec::default();
        place(&mut pod, &PodPlacement::default());
        assert_eq!(
            (pod.node_selector, pod.tolerations, pod.affinity),
            (None, None, None),
            "never an empty list or map the API server would drop"
        );
        assert_eq!(
            pod_annotations(&PodPlacement::default(), BTreeMap::new()),
            None
        );
    }

    #[test]
    fn the_placement_reaches_the_pod_spec_as_given() {
        let mut pod = PodSpec::default();
        let placement = placement();
        place(&mut pod, &placement);
        assert_eq!(pod.node_selector.as_ref(), Some(&placement.node_selector));
        assert_eq!(pod.tolerations.as_ref(), Some(&placement.tolerations));
        assert_eq!(pod.affinity, placement.affinity);
    }

    #[test]
    fn tolerations_and_affinity_are_built_as_the_server_stores_them() -> anyhow::Result<()> {
        let given: PodPlacement = serde_json::from_value(serde_json::json!({
            "tolerations": [{"key": "", "operator": "Exists", "value": "", "effect": ""}],
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "Exists", "values": []}], "matchFields": []},
                ]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app": "", "tier": "rpc"}, "matchExpressions": []},
                    "namespaceSelector": {"matchLabels": {}},
                    "namespaces": [],
                }}]},
                "podAffinity": {},
            },
        }))?;
        let mut pod = PodSpec::default();
        place(&mut pod, &given);
        assert_eq!(
            serde_json::to_value(&pod)?,
            serde_json::json!({
                "tolerations": [{"operator": "Exists"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "Exists"}]},
                    ]}},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "", "tier": "rpc"}},
                        "namespaceSelector": {},
                    }}]},
                    "podAffinity": {},
                },
                "containers": [],
            })
        );
        Ok(())
    }

    #[test]
    fn the_operators_own_pod_annotations_win() {
        let own = BTreeMap::from([("lotus-follower.io/config".to_owned(), "ours".to_owned())]);
        let merged = pod_annotations(&placement(), own).unwrap_or_default();
        assert_eq!(
            merged.get("lotus-follower.io/config").map(String::as_str),
            Some("ours"),
            "the operator's value, not the resource's"
        );
        assert_eq!(
            merged.get("example.com/team").map(String::as_str),
            Some("rpc"),
            "the resource's other keys stay"
        );
        assert_eq!(merged.len(), 2);
    }
}
