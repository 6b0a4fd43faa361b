//! Whether a live object already is what we would apply. Server-side apply of
//! an unchanged object is still a write request (and a dry run is one too), so
//! the reconciler compares locally and applies only what differs: a no-op resync
//! sends nothing.
//!
//! The desired object is a subset of the live one when every field it sets has
//! the same value live; fields the API server or other controllers add (defaults,
//! status, managedFields, annotations of others) do not count.

use serde_json::Value;

/// Whether every field `desired` sets is set to the same value in `live`.
/// Lists must have the same length and compare item by item (an item's extra
/// live fields are the server's defaults); a field removed from inside an item
/// is caught by [`drops_fields`].
pub fn is_applied(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(desired), Value::Object(live)) => desired.iter().all(|(key, value)| {
            value.is_null() || live.get(key).is_some_and(|live| is_applied(value, live))
        }),
        (Value::Array(desired), Value::Array(live)) => {
            desired.len() == live.len()
                && desired
                    .iter()
                    .zip(live)
                    .all(|(desired, live)| is_applied(desired, live))
        }
        (Value::String(desired), Value::String(live)) => {
            desired == live || same_quantity(desired, live)
        }
        (Value::Number(desired), Value::String(live))
        | (Value::String(live), Value::Number(desired)) => desired.to_string() == *live,
        (desired, live) => desired == live,
    }
}

/// The fields `manager`'s server-side apply owns in a live object (its
/// `fieldsV1`), `Null` when it applied nothing.
pub fn owned_fields(live: &Value, manager: &str) -> Value {
    live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["manager"] == manager && entry["operation"] == "Apply")
        .map_or(Value::Null, |entry| entry["fieldsV1"].clone())
}

/// Whether the last apply set a field `desired` no longer sets (a removed
/// annotation, resources taken out of a container). Applying again removes it
/// — server-side apply drops what its manager stops sending — which the subset
/// comparison cannot see. List items owned by key (`k:{"name":"x"}`) are
/// matched to the desired item with those key fields; items owned by value or
/// index (`v:`, `i:`) are compared whole by [`is_applied`].
pub fn drops_fields(owned: &Value, desired: &Value) -> bool {
    let Value::Object(owned) = owned else {
        return false;
    };
    owned.iter().any(|(key, below)| {
        if let Some(name) = key.strip_prefix("f:") {
            return match desired.get(name) {
                None | Some(Value::Null) => true,
                Some(inner @ (Value::Object(_) | Value::Array(_))) => drops_fields(below, inner),
                Some(_) => false,
            };
        }
        let (Some(fields), Value::Array(items)) = (key.strip_prefix("k:"), desired) else {
            return false;
        };
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) else {
            return false;
        };
        // A key field the desired item leaves out is one the server defaulted
        // (a port's `protocol: TCP`).
        let matches = |item: &&Value| {
            fields
                .iter()
                .all(|(k, v)| item.get(k).is_none_or(|given| given == v))
        };
        match items.iter().find(matches) {
            Some(item) => drops_fields(below, item),
            None => true,
        }
    })
}

/// Quantities the API server rewrites to their canonical form: `1000m` is `1`,
/// `0.5` is `500m`, `1024Mi` is `1Gi`, `1e3` is `1k`. Compared by value in
/// nano-units; anything that is not a quantity compares as text.
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity_nanos(a), quantity_nanos(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn quantity_nanos(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.len() > 30 {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let scale = 10i128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let fraction_value = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i128>().ok()?
    };
    let value = whole
        .parse::<i128>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(fraction_value)?;
    let decimal = |power: u32| 10i128.checked_pow(power);
    let multiplier: i128 = match suffix {
        "n" => 1,
        "u" => decimal(3)?,
        "m" => decimal(6)?,
        "" => decimal(9)?,
        "k" => decimal(12)?,
        "M" => decimal(15)?,
        "G" => decimal(18)?,
        "T" => decimal(21)?,
        "P" => decimal(24)?,
        "E" => decimal(27)?,
        "Ki" => decimal(9)? << 10,
        "Mi" => decimal(9)? << 20,
        "Gi" => decimal(9)? << 30,
        "Ti" => decimal(9)? << 40,
        "Pi" => decimal(9)? << 50,
        "Ei" => decimal(9)? << 60,
        exponent => {
            let power: u32 = exponent
                .strip_prefix(['e', 'E'])?
                .trim_start_matches('+')
                .parse()
                .ok()?;
            decimal(9 + power)?
        }
    };
    let nanos = value.checked_mul(multiplier)?;
    (nanos % scale == 0).then_some(nanos / scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_extra_fields_do_not_count() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "f", "args": ["serve"]}]}}}});
        let live = json!({
            "metadata": {"managedFields": [], "resourceVersion": "7"},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 600,
                     "template": {"spec": {"containers": [{"name": "f", "args": ["serve"], "imagePullPolicy": "IfNotPresent"}], "dnsPolicy": "ClusterFirst"}}},
            "status": {"readyReplicas": 2},
        });
        assert!(is_applied(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_field_counts() {
        let live = json!({"spec": {"replicas": 2, "args": ["serve", "--network", "mainnet"]}});
        assert!(!is_applied(&json!({"spec": {"replicas": 3}}), &live));
        assert!(!is_applied(&json!({"spec": {"image": "x"}}), &live));
        assert!(
            !is_applied(&json!({"spec": {"args": ["serve", "--network"]}}), &live),
            "lists are ours as a whole"
        );
        assert!(!is_applied(
            &json!({"spec": {"args": ["serve", "--network", "calibnet"]}}),
            &live
        ));
        assert!(
            is_applied(&json!({"spec": {"replicas": null}}), &live),
            "an unset field is not ours"
        );
    }

    #[test]
    fn a_field_the_last_apply_set_and_desired_drops_counts() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "other", "operation": "Apply", "fieldsV1": {"f:spec": {"f:x": {}}}},
            {"manager": "op", "operation": "Apply", "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:lb": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {"f:ports": {"k:{\"port\":1234}": {".": {}, "f:port": {}}}, "f:type": {}},
            }},
        ]}});
        let owned = owned_fields(&live, "op");
        let same = json!({"metadata": {"annotations": {"lb": "nlb"}, "labels": {"app": "a"}},
                          "spec": {"ports": [{"port": 1234}], "type": "LoadBalancer"}});
        assert!(!drops_fields(&owned, &same));
        let without_annotation = json!({"metadata": {"labels": {"app": "a"}},
                                        "spec": {"ports": [{"port": 1234}], "type": "LoadBalancer"}});
        assert!(drops_fields(&owned, &without_annotation));
        let without_type = json!({"metadata": {"annotations": {"lb": "nlb"}, "labels": {"app": "a"}},
                                  "spec": {"ports": [{"port": 1234}], "type": null}});
        assert!(drops_fields(&owned, &without_type));
        assert_eq!(owned_fields(&live, "nobody"), Value::Null);
        assert!(!drops_fields(&Value::Null, &same));
    }

    #[test]
    fn a_field_dropped_inside_a_keyed_list_item_counts() {
        let owned = json!({"f:spec": {"f:containers": {
            "k:{\"name\":\"follower\"}": {".": {}, "f:name": {}, "f:resources": {"f:requests": {"f:cpu": {}}}},
        }}});
        let with = json!({"spec": {"containers": [{"name": "follower", "resources": {"requests": {"cpu": "1"}}}]}});
        let without = json!({"spec": {"containers": [{"name": "follower"}]}});
        let renamed = json!({"spec": {"containers": [{"name": "other"}]}});
        assert!(!drops_fields(&owned, &with));
        assert!(drops_fields(&owned, &without));
        assert!(drops_fields(&owned, &renamed));
        // The server adds defaulted key fields to the keys it records.
        let ports =
            json!({"f:ports": {"k:{\"containerPort\":1234,\"protocol\":\"TCP\"}": {"f:name": {}}}});
        assert!(!drops_fields(
            &ports,
            &json!({"ports": [{"containerPort": 1234, "name": "rpc"}]})
        ));
        assert!(drops_fields(
            &ports,
            &json!({"ports": [{"containerPort": 1234}]})
        ));
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("1Gi", "1Gi"),
            ("100m", "0.1"),
            ("1000G", "1T"),
            ("0.0001", "100u"),
            ("1e3", "1k"),
            ("2E6", "2M"),
            ("1Ei", "1024Pi"),
        ] {
            assert!(
                is_applied(&json!({"cpu": a}), &json!({"cpu": b})),
                "{a} = {b}"
            );
        }
        for (a, b) in [
            ("1", "2"),
            ("1Gi", "1G"),
            ("500m", "5"),
            ("abc", "abc1"),
            ("99999999999999999999999999999999999", "1"),
        ] {
            assert!(
                !is_applied(&json!({"cpu": a}), &json!({"cpu": b})),
                "{a} != {b}"
            );
        }
        assert!(is_applied(&json!({"port": 1234}), &json!({"port": 1234})));
    }

    /// The placement of `fixtures/placement.yaml` as the followers' Deployment
    /// carries it: a resync of the same resource writes nothing, and each kind of
    /// change to it (a list item, a nested affinity field, a map key) is seen.
    #[test]
    fn pod_placement_round_trips_and_its_changes_count() -> anyhow::Result<()> {
        use crate::build::{fixture, followers};

        let cluster = fixture(include_str!("../build/fixtures/placement.yaml"))?;
        let desired = serde_json::to_value(followers::deployment(&cluster))?;
        let mut live = desired.clone();
        // What the server adds: defaults inside the placement's own items, and
        // the fields others manage.
        live["spec"]["template"]["spec"]["schedulerName"] = json!("default-scheduler");
        live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
            json!("2026-01-01T00:00:00Z");
        live["metadata"]["managedFields"] = json!([{"manager": "op", "operation": "Apply", "fieldsV1": {
            "f:spec": {"f:template": {
                "f:metadata": {"f:annotations": {
                    "f:cluster-autoscaler.kubernetes.io/safe-to-evict": {}, "f:example.com/owner": {}}},
                "f:spec": {"f:nodeSelector": {"f:node-pool": {}}, "f:tolerations": {}, "f:affinity": {
                    "f:nodeAffinity": {"f:preferredDuringSchedulingIgnoredDuringExecution": {}},
                    "f:podAntiAffinity": {"f:requiredDuringSchedulingIgnoredDuringExecution": {}}}},
            }},
        }}]);
        let owned = owned_fields(&live, "op");
        assert!(is_applied(&desired, &live), "a no-op resync writes nothing");
        assert!(!drops_fields(&owned, &desired));

        let pod = |value: &Value| value["spec"]["template"]["spec"].clone();
        let with_pod = |change: &dyn Fn(&mut Value)| {
            let mut changed = desired.clone();
            change(&mut changed["spec"]["template"]["spec"]);
            changed
        };
        // Lists are compared whole: one toleration fewer, or another order.
        let fewer = with_pod(&|pod| {
            if let Some(items) = pod["tolerations"].as_array_mut() {
                items.pop();
            }
        });
        assert!(!is_applied(&fewer, &live));
        let reordered = with_pod(&|pod| {
            if let Some(items) = pod["tolerations"].as_array_mut() {
                items.reverse();
            }
        });
        assert!(!is_applied(&reordered, &live));
        let reweighted = with_pod(&|pod| {
            pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
                ["weight"] = json!(80);
        });
        assert!(!is_applied(&reweighted, &live));
        let moved = with_pod(&|pod| pod["nodeSelector"]["node-pool"] = json!("rpc-2"));
        assert!(!is_applied(&moved, &live));
        // Maps are subsets: a key taken out is seen through what the last apply owned.
        let mut unannotated = desired.clone();
        if let Some(annotations) =
            unannotated["spec"]["template"]["metadata"]["annotations"].as_object_mut()
        {
            annotations.remove("example.com/owner");
        }
        assert!(is_applied(&unannotated, &live));
        assert!(drops_fields(&owned, &unannotated));
        let unplaced = with_pod(&|pod| {
            if let Some(fields) = pod.as_object_mut() {
                fields.remove("affinity");
                fields.remove("nodeSelector");
            }
        });
        assert!(drops_fields(&owned, &unplaced));
        assert_ne!(pod(&unplaced), pod(&desired));
        Ok(())
    }
}
