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
/// Lists compare item by item and must have the same length: a list we manage
/// (containers, ports, args) is ours as a whole.
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
/// annotation, resources taken out). Applying again removes it — server-side
/// apply drops what its manager stops sending — which the subset comparison
/// cannot see. Lists are compared whole by [`is_applied`], so list items in
/// `owned` (`k:`, `v:`, `i:` keys) are not descended into.
pub fn drops_fields(owned: &Value, desired: &Value) -> bool {
    let Value::Object(owned) = owned else {
        return false;
    };
    owned.iter().any(|(key, below)| {
        let Some(name) = key.strip_prefix("f:") else {
            return false;
        };
        match desired.get(name) {
            None | Some(Value::Null) => true,
            Some(inner @ Value::Object(_)) => drops_fields(below, inner),
            Some(_) => false,
        }
    })
}

/// Quantities the API server rewrites to their canonical form: `1000m` is `1`,
/// `0.5` is `500m`, `1024Mi` is `1Gi`. Compared by value in milli-units.
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity_millis(a), quantity_millis(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn quantity_millis(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let scale = 10i128.pow(u32::try_from(fraction.len()).ok()?);
    let value = whole.parse::<i128>().ok()? * scale
        + if fraction.is_empty() {
            0
        } else {
            fraction.parse::<i128>().ok()?
        };
    let multiplier: i128 = match suffix {
        "m" => 1,
        "" => 1000,
        "k" => 1000 * 1000,
        "M" => 1000 * 1_000_000,
        "G" => 1000 * 1_000_000_000,
        "Ki" => 1000 << 10,
        "Mi" => 1000 << 20,
        "Gi" => 1000 << 30,
        "Ti" => 1000 << 40,
        _ => return None,
    };
    let millis = value * multiplier;
    (millis % scale == 0).then_some(millis / scale)
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
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("1Gi", "1Gi"),
            ("100m", "0.1"),
        ] {
            assert!(
                is_applied(&json!({"cpu": a}), &json!({"cpu": b})),
                "{a} = {b}"
            );
        }
        for (a, b) in [("1", "2"), ("1Gi", "1G"), ("500m", "5"), ("abc", "abc1")] {
            assert!(
                !is_applied(&json!({"cpu": a}), &json!({"cpu": b})),
                "{a} != {b}"
            );
        }
        assert!(is_applied(&json!({"port": 1234}), &json!({"port": 1234})));
    }
}
