//! The RPC server over real HTTP and websockets on 127.0.0.1, on stores filled
//! by importing the shared chain data.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Limits, protocol};
use crate::{
    chain::Network,
    import::import,
    query::Chain,
    serve::{RunningServer, ServeOptions, start},
    store::{Head, Store, embedded::EmbeddedStore},
    testdata,
};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    server: RunningServer,
}

impl Fixture {
    /// A server on `files` imported in order, or `None` when the data is missing outside CI.
    async fn new(files: &[&str], network: Network, limits: Limits) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(EmbeddedStore::open(dir.path())?);
        for file in files {
            let Some(path) = testdata::path(file)? else {
                return Ok(None);
            };
            import(
                store.as_ref(),
                &path.to_string_lossy(),
                network,
                &mut |_| {},
            )?;
        }
        let options = ServeOptions {
            metrics_listen: Some("127.0.0.1:0".parse()?),
            cache_bytes: 64 << 20,
            limits,
            ..ServeOptions::local(network)
        };
        let server = start(store.clone(), options).await?;
        Ok(Some(Self {
            _dir: dir,
            store,
            server,
        }))
    }

    /// A mainnet server on `export40.car` with the default limits.
    async fn export40() -> anyhow::Result<Option<Self>> {
        Self::new(
            &["chains/export40.car"],
            Network::Mainnet,
            Limits::default(),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.rpc_address)
    }

    /// POSTs a raw body; returns the HTTP status and the body as JSON (or text).
    async fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
        testdata::post(&self.url(path), body, None).await
    }

    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call_on("/rpc/v1", method, params).await
    }

    async fn call_on(&self, path: &str, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (_, response) = self.post(path, body.to_string()).await?;
        Ok(response)
    }

    async fn result(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let response = self.call(method, params.clone()).await?;
        anyhow::ensure!(
            response.get("error").is_none(),
            "{method}({params}) failed: {response}"
        );
        Ok(response["result"].clone())
    }
}

fn error_code(response: &Value) -> Option<i64> {
    response["error"]["code"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tipsets_answer_at_every_height_over_http() -> anyhow::Result<()> {
    let Some(fixture) = Fixture::export40().await? else {
        return Ok(());
    };
    let chain = Chain::new(fixture.store.as_ref(), Network::Mainnet);
    let head = chain.head()?;
    let anchor = chain.tipset_by_height(30, &head)?;
    let head_json = fixture.result("Filecoin.ChainHead", json!([])).await?;
    assert_eq!(head_json["Height"], 39);
    for (anchor, anchor_json) in [
        (&head, Value::Null),
        (
            &anchor,
            serde_json::to_value(anchor.to_json(Network::Mainnet).cids)?,
        ),
    ] {
        for height in 0..=anchor.height() {
            let by = fixture
                .result(
                    "Filecoin.ChainGetTipSetByHeight",
                    json!([height, anchor_json]),
                )
                .await?;
            let after = fixture
                .result(
                    "Filecoin.ChainGetTipSetAfterHeight",
                    json!([height, anchor_json]),
                )
                .await?;
            let expected_by = chain.tipset_by_height(height, anchor)?;
            let expected_after = chain.tipset_after_height(height, anchor)?;
            assert_eq!(
                by["Cids"],
                serde_json::to_value(expected_by.to_json(Network::Mainnet).cids)?
            );
            assert_eq!(
                after["Cids"],
                serde_json::to_value(expected_after.to_json(Network::Mainnet).cids)?
            );
            assert_eq!(by["Height"].as_i64(), Some(expected_by.height()));
        }
        let above = fixture
            .call(
                "Filecoin.ChainGetTipSetByHeight",
                json!([anchor.height() + 1, anchor_json]),
            )
            .await?;
        assert_eq!(error_code(&above), Some(protocol::METHOD_ERROR), "{above}");
    }
    // A null round answers with the tipset below (by) and above (after).
    let null = fixture
        .result("Filecoin.ChainGetTipSetByHeight", json!([25, null]))
        .await?;
    assert_eq!(null["Height"], 23);
    let after = fixture
        .result("Filecoin.ChainGetTipSetAfterHeight", json!([25, null]))
        .await?;
    assert_eq!(after["Height"], 28);
    // A multi-block tipset by a permutation of its key.
    let multi = fixture
        .result("Filecoin.ChainGetTipSetByHeight", json!([33, null]))
        .await?;
    let mut cids = multi["Cids"].as_array().cloned().unwrap_or_default();
    assert!(cids.len() >= 2);
    cids.reverse();
    let same = fixture
        .result("Filecoin.ChainGetTipSet", json!([cids]))
        .await?;
    assert_eq!(same["Cids"], multi["Cids"]);
    // EthBlockNumber is the head's parent's height (38), not the head's.
    assert_eq!(fixture.result("eth_blockNumber", json!([])).await?, "0x26");
    fixture.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_state_answers_with_network_prefixes() -> anyhow::Result<()> {
    for (file, network, prefix) in [
        ("genesis/mainnet.car", Network::Mainnet, "f"),
        ("genesis/calibnet.car", Network::Calibnet, "t"),
    ] {
        let Some(fixture) = Fixture::new(&[file], network, Limits::default()).await? else {
            return Ok(());
        };
        for id in [0, 1, 2, 3, 4, 5, 90, 99] {
            let address = format!("{prefix}0{id}");
            let actor = fixture
                .result("Filecoin.StateGetActor", json!([address, null]))
                .await?;
            assert!(
                actor["Code"]["/"].is_string() && actor["Balance"].is_string(),
                "{actor}"
            );
            assert_eq!(
                fixture
                    .result("Filecoin.StateLookupID", json!([address, null]))
                    .await?,
                json!(address)
            );
            let balance = fixture
                .result("Filecoin.WalletBalance", json!([address]))
                .await?;
            assert_eq!(balance, actor["Balance"]);
        }
        // The genesis epoch runs under network version 0 on both; the
        // parameters carry the network's name, chain ID and genesis time.
        assert_eq!(
            fixture
                .result("Filecoin.StateNetworkVersion", json!([null]))
                .await?,
            0
        );
        let params = fixture
            .result("Filecoin.StateGetNetworkParams", json!([]))
            .await?;
        let genesis = fixture
            .result("Filecoin.ChainGetGenesis", json!([]))
            .await?;
        assert_eq!(
            params["GenesisTimestamp"],
            genesis["Blocks"][0]["Timestamp"]
        );
        assert_eq!(params["Eip155ChainID"], network.chain_id());
        assert_eq!(
            params["ForkUpgradeParams"]["UpgradeHyperdriveHeight"],
            network.hyperdrive_height()
        );
        if network == Network::Mainnet {
            assert_eq!(params["NetworkName"], "testnetnet");
            assert_eq!(params["ConsensusMinerMinPower"], "10995116277760");
            assert_eq!(
                fixture
                    .result("Filecoin.WalletBalance", json!(["f090"]))
                    .await?,
                "276400000000000000000000000"
            );
            assert_eq!(
                fixture
                    .result("Filecoin.StateNetworkName", json!([]))
                    .await?,
                "testnetnet"
            );
        } else {
            assert_eq!(
                fixture
                    .result("Filecoin.StateNetworkName", json!([]))
                    .await?,
                "calibrationnet"
            );
        }
        // An account's key address, printed with the network's prefix, and back.
        let key = fixture
            .result(
                "Filecoin.StateAccountKey",
                json!([format!("{prefix}0100"), null]),
            )
            .await;
        if let Ok(Value::String(key)) = key {
            assert!(key.starts_with(prefix), "{key}");
            let id = fixture
                .result("Filecoin.StateLookupID", json!([key, null]))
                .await?;
            assert_eq!(id, json!(format!("{prefix}0100")));
        }
        let system = fixture
            .call(
                "Filecoin.StateAccountKey",
                json!([format!("{prefix}00"), null]),
            )
            .await?;
        assert_eq!(
            error_code(&system),
            Some(protocol::METHOD_ERROR),
            "the system actor has no key: {system}"
        );
        assert_eq!(
            fixture
                .result("Filecoin.WalletBalance", json!([format!("{prefix}099999")]))
                .await?,
            "0"
        );
        fixture.server.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_rpc_errors() -> anyhow::Result<()> {
    let limits = Limits {
        max_body_bytes: 64 << 10,
        max_batch: 10,
        max_json_depth: 16,
        max_subscriptions: 2,
    };
    let Some(fixture) = Fixture::new(&["chains/export40.car"], Network::Mainnet, limits).await?
    else {
        return Ok(());
    };
    let request = |method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
    };
    let cases: Vec<(&str, String, i64)> = vec![
        (
            "malformed JSON",
            "{\"jsonrpc\": \"2.0\", ".into(),
            protocol::PARSE_ERROR,
        ),
        ("not an object", "42".into(), protocol::INVALID_REQUEST),
        (
            "unknown method",
            request("Filecoin.NoSuchMethod", json!([])),
            protocol::METHOD_NOT_FOUND,
        ),
        (
            "too many params",
            request("Filecoin.ChainHead", json!([1])),
            protocol::INVALID_PARAMS,
        ),
        (
            "too few params",
            request("Filecoin.ChainGetTipSetByHeight", json!([1])),
            protocol::INVALID_PARAMS,
        ),
        (
            "wrong type",
            request("Filecoin.ChainGetTipSetByHeight", json!(["ten", null])),
            protocol::INVALID_PARAMS,
        ),
        (
            "negative height",
            request("Filecoin.ChainGetTipSetByHeight", json!([-1, null])),
            protocol::INVALID_PARAMS,
        ),
        (
            "huge height",
            request("Filecoin.ChainGetTipSetByHeight", json!([u64::MAX, null])),
            protocol::INVALID_PARAMS,
        ),
        (
            "height above the head",
            request("Filecoin.ChainGetTipSetByHeight", json!([i64::MAX, null])),
            protocol::METHOD_ERROR,
        ),
        (
            "invalid CID",
            request("Filecoin.ChainGetBlock", json!([{"/": "bafy-not-a-cid"}])),
            protocol::INVALID_PARAMS,
        ),
        (
            "CID not an object",
            request("Filecoin.ChainReadObj", json!(["bafy"])),
            protocol::INVALID_PARAMS,
        ),
        (
            "invalid address",
            request("Filecoin.StateGetActor", json!(["f0abc", null])),
            protocol::INVALID_PARAMS,
        ),
        (
            "bad checksum",
            request(
                "Filecoin.WalletBalance",
                json!(["f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6r"]),
            ),
            protocol::INVALID_PARAMS,
        ),
        (
            "params an object",
            r#"{"jsonrpc":"2.0","id":1,"method":"Filecoin.ChainHead","params":{}}"#.into(),
            protocol::INVALID_PARAMS,
        ),
        (
            "deep nesting",
            format!("{}1{}", "[".repeat(100), "]".repeat(100)),
            protocol::LIMIT_EXCEEDED,
        ),
        (
            "huge batch",
            format!(
                "[{}]",
                vec![request("Filecoin.ChainHead", json!([])); 11].join(",")
            ),
            protocol::LIMIT_EXCEEDED,
        ),
        ("empty batch", "[]".into(), protocol::INVALID_REQUEST),
        (
            "oversized body",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{}\"}}",
                "x".repeat(70_000)
            ),
            protocol::LIMIT_EXCEEDED,
        ),
        (
            "channel over HTTP",
            request("Filecoin.ChainNotify", json!([])),
            protocol::METHOD_ERROR,
        ),
    ];
    for (what, body, code) in cases {
        let (status, response) = fixture.post("/rpc/v1", body).await?;
        assert_eq!(
            error_code(&response),
            Some(code),
            "{what}: HTTP {status} {response}"
        );
    }
    // A batch answers each call in order, errors included.
    let batch = format!(
        "[{},{}]",
        request("Filecoin.ChainHead", json!([])),
        // calibnet block 3000: a valid CID this store does not hold.
        request(
            "Filecoin.ChainGetBlock",
            json!([{"/": "bafy2bzacecpjvcld56dazyukvj35uzwvlh3tb4ga2lvbgbiua3mgbqaz45hbm"}])
        )
    );
    let (_, responses) = fixture.post("/rpc/v1", batch).await?;
    assert_eq!(responses[0]["result"]["Height"], 39);
    let missing = responses[1]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        missing.contains("not in the store"),
        "data not in the store is named: {missing}"
    );
    // The server still answers after all that.
    assert_eq!(
        fixture.result("Filecoin.ChainHead", json!([])).await?["Height"],
        39
    );
    fixture.server.stop().await;
    Ok(())
}

async fn next_json(
    socket: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_notify_pushes_head_changes_over_websocket() -> anyhow::Result<()> {
    let Some(fixture) = Fixture::export40().await? else {
        return Ok(());
    };
    let url = format!("ws://{}/rpc/v1", fixture.server.rpc_address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 7, "method": "Filecoin.ChainNotify", "params": []})
                .to_string()
                .into(),
        ))
        .await?;
    let answer = next_json(&mut socket).await?;
    let channel = answer["result"].clone();
    assert!(
        channel.is_number(),
        "ChainNotify answers with a channel id: {answer}"
    );
    let first = next_json(&mut socket).await?;
    assert_eq!(first["method"], "xrpc.ch.val");
    assert_eq!(first["params"][0], channel);
    assert_eq!(first["params"][1][0]["Type"], "current");
    assert_eq!(first["params"][1][0]["Val"]["Height"], 39);

    // Ordinary calls share the socket.
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 8, "method": "Filecoin.ChainHead"})
                .to_string()
                .into(),
        ))
        .await?;
    assert_eq!(next_json(&mut socket).await?["result"]["Height"], 39);

    // The head moves back to 30: the channel reverts 39…31 (null rounds have no tipsets).
    let chain = Chain::new(fixture.store.as_ref(), Network::Mainnet);
    let target = chain.tipset_by_height(30, &chain.head()?)?;
    let current = fixture
        .store
        .head()?
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    fixture.store.set_head(
        Some(current.version),
        Head {
            tipset: target.key().clone(),
            height: 30,
            version: current.version + 1,
            term: current.term,
        },
    )?;
    let changes = next_json(&mut socket).await?;
    let changes = changes["params"][1].as_array().cloned().unwrap_or_default();
    let heights: Vec<i64> = changes
        .iter()
        .filter_map(|change| change["Val"]["Height"].as_i64())
        .collect();
    assert!(
        changes.iter().all(|change| change["Type"] == "revert"),
        "{changes:?}"
    );
    assert_eq!(heights, (31..=39).rev().collect::<Vec<_>>());

    // xrpc.cancel of the ChainNotify request closes its channel.
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "method": "xrpc.cancel", "params": [7]})
                .to_string()
                .into(),
        ))
        .await?;
    let closed = next_json(&mut socket).await?;
    assert_eq!(closed["method"], "xrpc.ch.close");
    assert_eq!(closed["params"][0], channel);
    fixture.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_channels_and_slow_readers_are_dropped() -> anyhow::Result<()> {
    let limits = Limits {
        max_subscriptions: 1,
        ..Limits::default()
    };
    let Some(fixture) = Fixture::new(&["chains/export40.car"], Network::Mainnet, limits).await?
    else {
        return Ok(());
    };
    let url = format!("ws://{}/rpc/v1", fixture.server.rpc_address);
    let notify = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify"}).to_string();

    // A client that sends without ever reading is disconnected, not buffered for.
    let (mut greedy, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let head = json!({"jsonrpc": "2.0", "id": 2, "method": "Filecoin.ChainHead"}).to_string();
    let mut sent = 0;
    for _ in 0..5_000 {
        if tokio::time::timeout(
            Duration::from_secs(2),
            greedy.send(Message::Text(head.clone().into())),
        )
        .await
        .is_err()
        {
            break;
        }
        sent += 1;
    }
    println!("a client that never reads was cut off after {sent} requests");

    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    socket.send(Message::Text(notify.clone().into())).await?;
    let channel = next_json(&mut socket).await?["result"].clone();
    let _current = next_json(&mut socket).await?;
    socket.send(Message::Text(notify.into())).await?;
    let refused = next_json(&mut socket).await?;
    assert_eq!(
        error_code(&refused),
        Some(protocol::LIMIT_EXCEEDED),
        "one subscription per connection here: {refused}"
    );

    fixture.server.stop().await;
    let closed = next_json(&mut socket).await?;
    assert_eq!(closed["method"], "xrpc.ch.close");
    assert_eq!(closed["params"][0], channel);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() -> anyhow::Result<()> {
    let Some(fixture) =
        Fixture::new(&["chains/chain4.car"], Network::Mainnet, Limits::default()).await?
    else {
        return Ok(());
    };
    fixture.result("Filecoin.ChainHead", json!([])).await?;
    let get = |url: String| {
        tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, String)> {
            let response = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()?;
            Ok((
                response.status().as_u16(),
                response.into_body().read_to_string()?,
            ))
        })
    };
    assert_eq!(get(fixture.url("/health/livez")).await??.0, 200);
    assert_eq!(
        get(fixture.url("/health/readyz")).await??,
        (200, "ok\n".into())
    );
    let metrics_url = format!(
        "http://{}/metrics",
        fixture
            .server
            .metrics_address
            .ok_or_else(|| anyhow::anyhow!("no metrics"))?
    );
    let (_, metrics) = get(metrics_url).await??;
    for name in [
        "lotus_follower_rpc_requests_total{code=\"0\",method=\"Filecoin.ChainHead\"}",
        "lotus_follower_rpc_request_duration_seconds_bucket",
        "lotus_follower_head_height 3",
        "lotus_follower_head_lag_seconds",
        "lotus_follower_cache_hits_total",
        "lotus_follower_cache_misses_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    fixture.server.stop().await;

    // An empty store: live, not ready, and the failing check is named.
    let Some(empty) = Fixture::new(&[], Network::Mainnet, Limits::default()).await? else {
        return Ok(());
    };
    let (status, body) = get(empty.url("/health/readyz")).await??;
    assert_eq!(status, 503);
    assert!(body.starts_with("store:"), "{body}");
    let response = empty.call("Filecoin.ChainHead", json!([])).await?;
    assert_eq!(error_code(&response), Some(protocol::METHOD_ERROR));
    empty.server.stop().await;
    Ok(())
}

/// A method's name and its documented example params.
type DocumentedCall = (String, Vec<Value>);

/// The documented example params of every method in an OpenRPC document.
fn documented_params(document: &str) -> anyhow::Result<Option<Vec<DocumentedCall>>> {
    let Some(text) = testdata::read_string(&format!("openrpc/{document}"))? else {
        return Ok(None);
    };
    let doc: Value = serde_json::from_str(&text)?;
    let methods = doc["methods"].as_array().cloned().unwrap_or_default();
    Ok(Some(
        methods
            .iter()
            .map(|method| {
                let params = method["params"]
                    .as_array()
                    .map(|params| {
                        params
                            .iter()
                            .map(|p| p["schema"]["examples"][0].clone())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    method["name"].as_str().unwrap_or_default().to_owned(),
                    params,
                )
            })
            .collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lotus_documented_params_parse_and_results_have_lotus_shapes() -> anyhow::Result<()> {
    let Some(fixture) = Fixture::new(
        &["genesis/mainnet.car", "chains/chain4.car"],
        Network::Mainnet,
        Limits::default(),
    )
    .await?
    else {
        return Ok(());
    };
    for (document, path, version) in [
        ("gateway.json", "/rpc/v1", super::methods::ApiVersion::V1),
        ("v0-gateway.json", "/rpc/v0", super::methods::ApiVersion::V0),
    ] {
        let Some(documented) = documented_params(document)? else {
            return Ok(());
        };
        let mut checked = 0;
        for method in super::methods::all(version, false) {
            let Some((_, params)) = documented.iter().find(|(name, _)| name == method.name) else {
                continue;
            };
            // The examples name CIDs and heights this store does not have: an
            // error saying so is fine, one about the params is not.
            let response = fixture
                .call_on(path, method.name, Value::Array(params.clone()))
                .await?;
            let code = error_code(&response);
            assert!(
                !matches!(
                    code,
                    Some(
                        protocol::INVALID_PARAMS
                            | protocol::METHOD_NOT_FOUND
                            | protocol::PARSE_ERROR
                    )
                ),
                "{document} {}: the documented params {} do not parse: {response}",
                method.name,
                Value::Array(params.clone())
            );
            checked += 1;
        }
        println!("{document}: the documented params of {checked} served methods parse");
        assert!(checked > 10, "{document}: only {checked} methods checked");
    }

    // Our answers on the imported chain have the shape of Lotus's examples.
    let head = fixture.result("Filecoin.ChainHead", json!([])).await?;
    let block = head["Cids"][0].clone();
    let tsk = head["Cids"].clone();
    // chain4.car's only messages are at height 1, and it lacks the receipts at
    // height 2: a search for one answers with an error naming what is missing.
    let one = fixture
        .result("Filecoin.ChainGetTipSetByHeight", json!([1, null]))
        .await?;
    let messages = fixture
        .result("Filecoin.ChainGetMessagesInTipset", json!([one["Cids"]]))
        .await?;
    let message = messages[0]["Cid"].clone();
    for (path, method, params) in [
        (
            "/rpc/v1",
            "Filecoin.StateSearchMsg",
            json!([null, message, -1, true]),
        ),
        (
            "/rpc/v1",
            "Filecoin.StateWaitMsg",
            json!([message, 0, -1, true]),
        ),
        ("/rpc/v0", "Filecoin.StateSearchMsg", json!([message])),
        ("/rpc/v0", "Filecoin.StateWaitMsg", json!([message, 0])),
        (
            "/rpc/v0",
            "Filecoin.StateGetReceipt",
            json!([message, null]),
        ),
    ] {
        let response = fixture.call_on(path, method, params).await?;
        let error = response["error"]["message"].as_str().unwrap_or_default();
        assert!(
            error.contains("receipts") && error.contains("not in the store"),
            "{path} {method}: {response}"
        );
    }
    let genesis = fixture
        .result("Filecoin.ChainGetGenesis", json!([]))
        .await?["Cids"]
        .clone();
    let calls: Vec<(&str, Value)> = vec![
        ("Filecoin.ChainHead", json!([])),
        ("Filecoin.ChainGetTipSet", json!([tsk])),
        ("Filecoin.ChainGetTipSetByHeight", json!([2, tsk])),
        ("Filecoin.ChainGetTipSetAfterHeight", json!([2, null])),
        ("Filecoin.ChainGetBlock", json!([block])),
        ("Filecoin.ChainGetBlockMessages", json!([block])),
        ("Filecoin.ChainGetParentMessages", json!([block])),
        ("Filecoin.ChainGetParentReceipts", json!([block])),
        ("Filecoin.ChainGetMessage", json!([message])),
        ("Filecoin.ChainGetMessagesInTipset", json!([tsk])),
        ("Filecoin.ChainReadObj", json!([block])),
        ("Filecoin.ChainHasObj", json!([block])),
        ("Filecoin.ChainGetGenesis", json!([])),
        (
            "Filecoin.ChainGetPath",
            json!([
                fixture
                    .result("Filecoin.ChainGetGenesis", json!([]))
                    .await?["Cids"],
                tsk
            ]),
        ),
        // chain4.car holds state at genesis only.
        ("Filecoin.StateGetActor", json!(["f090", genesis])),
        ("Filecoin.StateLookupID", json!(["f090", genesis])),
        ("Filecoin.StateNetworkName", json!([])),
        ("Filecoin.StateNetworkVersion", json!([tsk])),
        ("Filecoin.StateGetNetworkParams", json!([])),
        ("Filecoin.Version", json!([])),
        ("Filecoin.Discover", json!([])),
        ("Filecoin.NetVersion", json!([])),
        ("Filecoin.NetListening", json!([])),
        ("Filecoin.Web3ClientVersion", json!([])),
        ("Filecoin.EthChainId", json!([])),
        ("Filecoin.EthBlockNumber", json!([])),
    ];
    for (method, params) in calls {
        let ours = fixture.result(method, params.clone()).await?;
        assert!(!ours.is_null(), "{method}({params}) answered null");
        let example = testdata::openrpc_example("gateway.json", method)?
            .ok_or_else(|| anyhow::anyhow!("no gateway.json"))?;
        testdata::assert_shape(&ours, &example, method)?;
    }
    fixture.server.stop().await;
    Ok(())
}
