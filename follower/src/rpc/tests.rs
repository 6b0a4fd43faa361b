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
        let options = ServeOptions {
            metrics_listen: Some("127.0.0.1:0".parse()?),
            cache_bytes: 64 << 20,
            limits,
            ..ServeOptions::local(network)
        };
        Self::with_options(files, options).await
    }

    /// A server on `files` imported in order, started with `options` as given.
    async fn with_options(files: &[&str], options: ServeOptions) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(EmbeddedStore::open(dir.path())?);
        for file in files {
            let Some(path) = testdata::path(file)? else {
                return Ok(None);
            };
            import(
                store.as_ref(),
                &path.to_string_lossy(),
                options.network,
                &mut |_| {},
            )?;
        }
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
        ..Limits::default()
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

/// A JSON-RPC POST over a bare TCP connection: the answer's body, or the
/// error. Tests that hold hundreds of requests open use this instead of a
/// blocking client, which would take a thread per request from the runtime
/// the server itself runs on.
async fn raw_post(address: std::net::SocketAddr, path: &str, body: &str) -> anyhow::Result<String> {
    raw_http(address, &format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await
}

async fn raw_get(address: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    raw_http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn raw_http(address: std::net::SocketAddr, request: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 "),
        "not an HTTP answer: {answer:?}"
    );
    Ok(answer)
}

/// A message CID no chain has.
fn unknown_message() -> String {
    use multihash_codetable::{Code, MultihashDigest};
    cid::Cid::new_v1(0x71, Code::Blake2b256.digest(b"a message never sent")).to_string()
}

/// Issue #12: 600 StateWaitMsg calls on an unknown message used to park 600
/// blocking threads (the pool has 512), so the readiness probe and every
/// other call queued behind them for as long as the waits lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_waits_leave_readiness_and_reads_answering() -> anyhow::Result<()> {
    let options = ServeOptions {
        max_wait: Duration::from_secs(60),
        ..ServeOptions::local(Network::Mainnet)
    };
    let Some(Fixture { server, _dir, .. }) =
        Fixture::with_options(&["chains/export40.car"], options).await?
    else {
        return Ok(());
    };
    let address = server.rpc_address;
    let wait = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.StateWaitMsg",
                      "params": [{"/": unknown_message()}, 0, -1, true]})
    .to_string();
    let waits: Vec<_> = (0..600)
        .map(|_| {
            let wait = wait.clone();
            tokio::spawn(async move { raw_post(address, "/rpc/v1", &wait).await })
        })
        .collect();
    // Let every wait reach the server and start waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut slowest = Duration::ZERO;
    for round in 0..20i64 {
        let started = std::time::Instant::now();
        let ready = raw_get(address, "/health/readyz").await?;
        let ready_took = started.elapsed();
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        // A different height each round: never from the response cache.
        let read = json!({"jsonrpc": "2.0", "id": 2, "method": "Filecoin.ChainGetTipSetByHeight",
                          "params": [round + 5, null]})
        .to_string();
        let started = std::time::Instant::now();
        let answer = raw_post(address, "/rpc/v1", &read).await?;
        let read_took = started.elapsed();
        assert!(answer.contains("\"Height\""), "{answer}");
        slowest = slowest.max(ready_took).max(read_took);
    }
    let pending = waits.iter().filter(|wait| !wait.is_finished()).count();
    println!(
        "with {pending} StateWaitMsg calls waiting, the slowest readiness check or uncached read took {slowest:?}"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "readiness and reads must answer within 100 ms while waits wait (slowest {slowest:?})"
    );
    assert_eq!(
        pending, 600,
        "every wait is still waiting, none was refused"
    );

    // Shutdown ends the waits at once, each with a JSON-RPC error.
    let started = std::time::Instant::now();
    server.stop().await;
    for wait in waits {
        let answer = tokio::time::timeout(Duration::from_secs(5), wait).await???;
        assert!(answer.contains("\"error\""), "{answer}");
    }
    println!("shutdown answered 600 waits in {:?}", started.elapsed());
    Ok(())
}

/// On one websocket, a waiting call holds up neither the next call nor the
/// cancel of the wait itself; a batch's waits run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_wait_blocks_neither_calls_nor_cancel() -> anyhow::Result<()> {
    let options = ServeOptions {
        max_wait: Duration::from_secs(3),
        ..ServeOptions::local(Network::Mainnet)
    };
    let Some(Fixture { server, _dir, .. }) =
        Fixture::with_options(&["chains/export40.car"], options).await?
    else {
        return Ok(());
    };
    let url = format!("ws://{}/rpc/v1", server.rpc_address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let wait = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "Filecoin.StateWaitMsg",
               "params": [{"/": unknown_message()}, 0, -1, true]})
    };
    socket
        .send(Message::Text(wait(1).to_string().into()))
        .await?;
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 2, "method": "Filecoin.ChainHead"})
                .to_string()
                .into(),
        ))
        .await?;
    let started = std::time::Instant::now();
    let head = next_json(&mut socket).await?;
    assert_eq!(head["id"], 2, "the call after a wait answers first: {head}");
    assert!(started.elapsed() < Duration::from_secs(1));
    socket
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "method": "xrpc.cancel", "params": [1]})
                .to_string()
                .into(),
        ))
        .await?;
    // A batch of 3 waits (max_wait 3 s): all answer together after ~3 s, not 9 s.
    let batch = Value::Array((10..13).map(wait).collect());
    let started = std::time::Instant::now();
    socket.send(Message::Text(batch.to_string().into())).await?;
    let answer = next_json(&mut socket).await?;
    let took = started.elapsed();
    // The cancelled wait never answers: the batch is the next message.
    assert!(answer.is_array(), "the cancelled wait answered: {answer}");
    assert_eq!(answer.as_array().map(Vec::len), Some(3));
    assert!(
        took < Duration::from_secs(6),
        "a batch's waits ran one after another: {took:?}"
    );
    server.stop().await;
    Ok(())
}

/// The new limits, each answered with a JSON-RPC error or a clean close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_errors_or_clean_closes() -> anyhow::Result<()> {
    let limits = Limits {
        max_waits: 1,
        max_response_bytes: 600,
        max_connections: 3,
        ws_ping_interval: Duration::from_millis(100),
        ws_idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let Some(fixture) = Fixture::new(&["chains/export40.car"], Network::Mainnet, limits).await?
    else {
        return Ok(());
    };
    let address = fixture.server.rpc_address;
    // A result over the response limit.
    let response = fixture
        .call("Filecoin.ChainGetTipSetByHeight", json!([20, null]))
        .await?;
    assert_eq!(
        error_code(&response),
        Some(protocol::LIMIT_EXCEEDED),
        "{response}"
    );
    // One wait at a time: the second is refused at once.
    let wait = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.StateWaitMsg",
                      "params": [{"/": unknown_message()}, 0, -1, true]})
    .to_string();
    let first = tokio::spawn({
        let wait = wait.clone();
        async move { raw_post(address, "/rpc/v1", &wait).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = raw_post(address, "/rpc/v1", &wait).await?;
    assert!(
        second.contains(&protocol::LIMIT_EXCEEDED.to_string()),
        "{second}"
    );
    let _ = first.await??;

    // A websocket client that never answers pings is closed once idle.
    let url = format!("ws://{address}/rpc/v1");
    let (mut silent, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut closed = false;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), silent.next()).await
    {
        match message {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "an idle websocket is closed");

    // Connections over the cap are closed on accept.
    let (_a, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (_b, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (_c, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let over = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        over.is_err(),
        "a fourth connection over a cap of 3 is closed"
    );
    fixture.server.stop().await;
    Ok(())
}

/// Without `--metrics-listen`, metrics are on the RPC listener at
/// `/debug/metrics` (as Lotus serves them); with it, only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_the_rpc_port_unless_a_metrics_listener_is_given() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let server = start(store.clone(), ServeOptions::local(Network::Mainnet)).await?;
    assert_eq!(server.metrics_address, None);
    let metrics = raw_get(server.rpc_address, "/debug/metrics").await?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("lotus_follower_head_height"), "{metrics}");

    // A second server on the same port: the error names the address and the flag.
    let taken = start(
        store.clone(),
        ServeOptions {
            listen: server.rpc_address,
            ..ServeOptions::local(Network::Mainnet)
        },
    )
    .await
    .err()
    .map(|error| format!("{error:#}"))
    .unwrap_or_default();
    assert!(
        taken.contains(&server.rpc_address.to_string()) && taken.contains("--listen"),
        "the bind error names the address and its flag: {taken:?}"
    );
    server.stop().await;

    let separate = start(
        store,
        ServeOptions {
            metrics_listen: Some("127.0.0.1:0".parse()?),
            ..ServeOptions::local(Network::Mainnet)
        },
    )
    .await?;
    let on_rpc = raw_get(separate.rpc_address, "/debug/metrics").await?;
    assert!(on_rpc.starts_with("HTTP/1.1 404"), "{on_rpc}");
    separate.stop().await;
    Ok(())
}

/// A call over `--request-timeout` gets a timeout error, and calls over a
/// method's concurrency limit are refused, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_concurrency_limits_are_json_rpc_errors() -> anyhow::Result<()> {
    for (limits, code) in [
        (
            Limits {
                request_timeout: Duration::from_nanos(1),
                ..Limits::default()
            },
            protocol::TIMEOUT,
        ),
        (
            Limits {
                max_concurrent_calls: 0,
                ..Limits::default()
            },
            protocol::LIMIT_EXCEEDED,
        ),
    ] {
        let Some(fixture) = Fixture::new(&["chains/chain4.car"], Network::Mainnet, limits).await?
        else {
            return Ok(());
        };
        let response = fixture
            .call("Filecoin.ChainGetTipSetByHeight", json!([1, null]))
            .await?;
        assert_eq!(error_code(&response), Some(code), "{response}");
        // Health is never behind either limit.
        let ready = raw_get(fixture.server.rpc_address, "/health/readyz").await?;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        fixture.server.stop().await;
    }
    Ok(())
}
