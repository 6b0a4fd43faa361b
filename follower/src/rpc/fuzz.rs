//! Property tests of the request path: whatever bytes arrive, the server answers
//! with a well-formed JSON-RPC response (or nothing, for notifications) and
//! never panics.

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    Limits, Server,
    auth::Allowed,
    handle_body,
    methods::{ApiVersion, Context, all},
};
use crate::{
    chain::{Network, upgrades::Schedule},
    metrics::Metrics,
    store::embedded::EmbeddedStore,
};

fn server(dir: &tempfile::TempDir) -> anyhow::Result<Server> {
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let (_, head) = watch::channel(None);
    let (_, shutdown) = watch::channel(false);
    let ctx = Context {
        store,
        network: Network::Mainnet,
        schedule: Arc::new(Schedule::of(Network::Mainnet)),
        block_delay_secs: 30,
        max_lookback_epochs: 2880,
        max_wait: Duration::from_millis(10),
        pool: None,
    };
    let (server, _feed) = Server::new(
        ctx,
        Limits::default(),
        Metrics::new()?,
        head,
        shutdown,
        super::response_cache(1 << 20),
        None,
    );
    Ok(server)
}

/// A response is an object with `jsonrpc: "2.0"`, an id, and exactly one of
/// `result` and `error`; a batch is an array of those.
fn well_formed(response: &Value) -> bool {
    match response {
        Value::Array(items) => !items.is_empty() && items.iter().all(well_formed),
        Value::Object(object) => {
            object.get("jsonrpc") == Some(&json!("2.0"))
                && object.contains_key("id")
                && (object.contains_key("result") != object.contains_key("error"))
        }
        _ => false,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,20}".prop_map(Value::String),
        Just(json!({"/": "bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2"})),
        Just(json!("f01234")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn method_name() -> impl Strategy<Value = String> {
    let known: Vec<String> = all(ApiVersion::V1, false)
        .map(|method| method.name.to_owned())
        .collect();
    prop_oneof![
        prop::sample::select(known),
        Just("Filecoin.ChainNotify".to_owned()),
        Just("eth_blockNumber".to_owned()),
        ".{0,30}",
    ]
}

fn request() -> impl Strategy<Value = Value> {
    (
        method_name(),
        prop::collection::vec(json_value(), 0..4),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(method, params, id)| match id {
            Some(id) => json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
            None => json!({"jsonrpc": "2.0", "method": method, "params": params}),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_get_a_json_rpc_answer(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The server starts its ChainNotify feed task on the runtime.
        let _entered = runtime.enter();
        let server = server(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let response = runtime.block_on(handle_body(&server, ApiVersion::V1, &Allowed::all(), &Bytes::from(bytes), false));
        // Random bytes are never a notification-only body.
        let response = response.ok_or_else(|| TestCaseError::fail("no answer"))?;
        let response: Value = serde_json::from_str(&response).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(well_formed(&response), "{response}");
    }

    #[test]
    fn any_request_or_batch_gets_well_formed_answers(batch in prop::collection::vec(request(), 1..5), as_batch in any::<bool>()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The server starts its ChainNotify feed task on the runtime.
        let _entered = runtime.enter();
        let server = server(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = if as_batch { Value::Array(batch.clone()) } else { batch[0].clone() };
        let response = runtime.block_on(handle_body(&server, ApiVersion::V1, &Allowed::all(), &Bytes::from(body.to_string()), false));
        let calls = if as_batch { batch.len() } else { 1 };
        let notifications = batch.iter().take(calls).filter(|request| request.get("id").is_none()).count();
        match response {
            Some(response) => {
                let response: Value = serde_json::from_str(&response).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(well_formed(&response), "{response}");
                if let Value::Array(items) = &response {
                    prop_assert_eq!(items.len(), calls - notifications);
                }
            }
            None => prop_assert_eq!(notifications, calls, "only notifications go unanswered"),
        }
    }
}
