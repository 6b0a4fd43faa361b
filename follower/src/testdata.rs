//! The shared test data (`../shared/data/`, or `$LOTUS_FOLLOWER_TEST_DATA`).
//! Under CI (`CI=true`) a missing file fails the test; elsewhere the test is
//! skipped with a notice naming the file.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    std::env::var_os("LOTUS_FOLLOWER_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The path of `relative` under the test data, or `None` (with a notice) when it
/// is missing outside CI.
pub fn path(relative: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = dir().join(relative);
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        anyhow::bail!(
            "test data {} is missing (set LOTUS_FOLLOWER_TEST_DATA)",
            path.display()
        );
    }
    eprintln!(
        "skipping: test data {} is missing (set LOTUS_FOLLOWER_TEST_DATA)",
        path.display()
    );
    Ok(None)
}

pub fn read_string(relative: &str) -> anyhow::Result<Option<String>> {
    path(relative)?
        .map(|path| Ok(std::fs::read_to_string(path)?))
        .transpose()
}

/// The documented example result of `method` in one of Lotus's OpenRPC documents.
pub fn openrpc_example(document: &str, method: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(text) = read_string(&format!("openrpc/{document}"))? else {
        return Ok(None);
    };
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let methods = doc["methods"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{document} lists no methods"))?;
    let entry = methods
        .iter()
        .find(|m| m["name"] == method)
        .ok_or_else(|| anyhow::anyhow!("{document} has no {method}"))?;
    let example = entry["result"]["schema"]["examples"][0].clone();
    anyhow::ensure!(
        !example.is_null(),
        "{document} has no example result for {method}"
    );
    Ok(Some(example))
}

/// Checks that `ours` has the shape of Lotus's example: the same keys and JSON
/// types, recursively (array elements against the example's first one). The
/// schemas contradict their examples in places, so examples are the reference.
/// A `null` of ours matches anything: Lotus writes null for absent values too.
pub fn assert_shape(
    ours: &serde_json::Value,
    example: &serde_json::Value,
    path: &str,
) -> anyhow::Result<()> {
    use serde_json::Value;
    match (ours, example) {
        (Value::Null, _) => Ok(()),
        (Value::Object(a), Value::Object(b)) => {
            let mut ours_keys: Vec<_> = a.keys().collect();
            let mut example_keys: Vec<_> = b.keys().collect();
            ours_keys.sort();
            example_keys.sort();
            anyhow::ensure!(
                ours_keys == example_keys,
                "{path}: keys {ours_keys:?}, Lotus has {example_keys:?}"
            );
            for (key, value) in a {
                assert_shape(value, &b[key], &format!("{path}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => match b.first() {
            Some(example) => {
                for (i, item) in a.iter().enumerate() {
                    assert_shape(item, example, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            None => Ok(()),
        },
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        _ => anyhow::bail!("{path}: ours is {ours}, Lotus's example is {example}"),
    }
}

/// POSTs a body to a JSON-RPC URL, with an API token if given; the HTTP status
/// and the JSON answer (or the text, when it is not JSON).
pub async fn post(
    url: &str,
    body: impl Into<Vec<u8>>,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = url.to_owned();
    let body = body.into();
    let authorization = token.map(|token| format!("Bearer {token}"));
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send(&body[..])?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    })
    .await?
}
