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
