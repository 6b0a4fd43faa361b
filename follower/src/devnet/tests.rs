//! The devnet on an embedded store, driven step by step with a fake clock: the
//! chain it writes is self-consistent, a restart continues it, and reorgs and
//! growing tipsets reach ChainNotify subscribers as Lotus sends them.

use std::{collections::HashSet, sync::Arc, time::Duration};

use base64::Engine;
use cid::Cid;
use futures::{SinkExt, StreamExt};
use fvm_ipld_amt::Amtv0;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::*;
use crate::{
    chain::cbor,
    import::links,
    rpc::auth::Perm,
    serve::{ServeOptions, start},
    store::{StoreBlockstore, embedded::EmbeddedStore},
    testdata,
};

const GENESIS_TIME: u64 = 1_700_000_000;

fn open(
    dir: &tempfile::TempDir,
    options: DevnetOptions,
) -> anyhow::Result<(Arc<EmbeddedStore>, Devnet)> {
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let devnet = Devnet::open(store.clone(), options, Some(GENESIS_TIME))?;
    Ok((store, devnet))
}

fn at(height: u64) -> u64 {
    GENESIS_TIME + height * 30
}

/// Every block reachable from `roots` is stored and hashes to its CID.
fn check_dag(store: &dyn Store, roots: &[Cid]) -> anyhow::Result<usize> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Cid> = roots.to_vec();
    while let Some(cid) = stack.pop() {
        if cid.hash().code() == cbor::IDENTITY_HASH || !seen.insert(cid) {
            continue;
        }
        let bytes = store
            .get_block(&cid)?
            .ok_or_else(|| anyhow::anyhow!("block {cid} is not stored"))?;
        cbor::verify(&cid, &bytes)?;
        stack.extend(links(&cid, &bytes));
    }
    Ok(seen.len())
}

#[test]
fn the_chain_it_produces_is_self_consistent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = DevnetOptions {
        seed: 3,
        state_churn: 6,
        ..DevnetOptions::default()
    };
    let (store, mut devnet) = open(&dir, options)?;
    let (mut produced, mut nulls, mut messages) = (0, 0, 0);
    for height in 1..=60 {
        match devnet.step(at(height))? {
            Step::Produced { messages: m, .. } => {
                produced += 1;
                messages += m;
            }
            Step::NullRound(_) => nulls += 1,
            Step::Idle => anyhow::bail!("epoch {height} produced nothing"),
        }
    }
    println!("60 epochs: {produced} tipsets, {nulls} null rounds, {messages} messages");
    assert!(nulls > 0, "some epochs are null rounds");

    let chain = Chain::new(store.as_ref(), Network::Devnet);
    let head = chain.head()?;
    assert_eq!(
        head.height(),
        60 - i64::from(devnet.step(at(60))? != Step::Idle)
    );
    let blocks = check_dag(store.as_ref(), head.key().cids())?;
    println!("{blocks} blocks reachable from the head, all stored and matching their CIDs");

    let mut sizes = HashSet::new();
    let mut tipset = head;
    while tipset.height() > 0 {
        let parent = chain.parent(&tipset)?;
        // Stored keys are in Lotus's ticket order (TipSet::new sorts by ticket).
        let reloaded = TipSet::new(tipset.blocks().cloned().collect())?;
        assert_eq!(reloaded.key(), tipset.key());
        assert_eq!(tipset.parents(), *parent.key());
        assert!(
            produce::weight(&tipset) > produce::weight(&parent),
            "weights grow"
        );
        assert_eq!(tipset.timestamp(), at(tipset.height() as u64));
        // One receipt per message the parent's blocks carried.
        let executed = crate::chain::selection::tipset_messages(
            &StoreBlockstore(store.as_ref()),
            &parent,
            Network::Devnet,
        )?;
        let receipts = Amtv0::<crate::chain::MessageReceipt, _>::load(
            &tipset.parent_message_receipts(),
            StoreBlockstore(store.as_ref()),
        )?;
        assert_eq!(
            receipts.count(),
            executed.len() as u64,
            "at height {}",
            tipset.height()
        );
        sizes.insert(tipset.blocks().count());
        tipset = parent;
    }
    println!("tipset sizes seen: {sizes:?}");
    assert!(sizes.len() > 1, "tipsets of several sizes");

    // Transfers moved balances and nonces; the genesis names the devnet.
    let head = chain.head()?;
    assert_eq!(chain.network_name(&head)?, "devnet");
    let mut changed = 0;
    for index in 1..8 {
        let address = Account::derive(3, index)?.address;
        let actor = chain.actor(&address, &head)?;
        if actor.nonce > 0 {
            changed += 1;
        }
    }
    assert!(changed >= 6, "{changed} accounts sent transfers");
    Ok(())
}

#[test]
fn a_restart_continues_the_chain_with_null_rounds_for_the_downtime() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, mut devnet) = open(&dir, DevnetOptions::default())?;
    for height in 1..=5 {
        devnet.step(at(height))?;
    }
    let before = devnet.head().clone();
    drop(devnet);
    drop(store);
    let (_, mut devnet) = open(&dir, DevnetOptions::default())?;
    assert_eq!(devnet.head().key(), before.key());
    // Down for ten epochs: the next tipset is at the clock's epoch, on the old head.
    let mut height = 16;
    while devnet.step(at(height))? == Step::NullRound(height as i64) {
        height += 1;
    }
    assert_eq!(devnet.head().height(), height as i64);
    assert_eq!(devnet.head().parents(), *before.key());
    Ok(())
}

#[test]
fn a_restart_with_another_clock_or_seed_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, mut devnet) = open(&dir, DevnetOptions::default())?;
    devnet.produce(3)?;
    drop(devnet);
    drop(store);
    for options in [
        DevnetOptions {
            block_time: Duration::from_secs(10),
            ..DevnetOptions::default()
        },
        DevnetOptions {
            seed: 5,
            ..DevnetOptions::default()
        },
    ] {
        let error = open(&dir, options)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("differs from these options"), "{error}");
    }
    Ok(())
}

async fn next_json(
    socket: &mut (
             impl StreamExt<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin
         ),
) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
        if let WsMessage::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

/// The (Type, Height, block count) of each change in a ChainNotify batch.
fn changes(batch: &Value) -> Vec<(String, i64, usize)> {
    batch["params"][1]
        .as_array()
        .into_iter()
        .flatten()
        .map(|change| {
            (
                change["Type"].as_str().unwrap_or_default().to_owned(),
                change["Val"]["Height"].as_i64().unwrap_or(-1),
                change["Val"]["Cids"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_and_growing_tipsets_reach_chain_notify_reverts_first() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, mut devnet) = open(&dir, DevnetOptions::default())?;
    for height in 1..=8 {
        devnet.step(at(height))?;
    }
    let server = start(
        store.clone(),
        ServeOptions {
            max_lookback_epochs: i64::MAX,
            ..ServeOptions::local(Network::Devnet)
        },
    )
    .await?;
    let url = format!("ws://{}/rpc/v1", server.rpc_address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let request =
        json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify", "params": []});
    socket
        .send(WsMessage::Text(request.to_string().into()))
        .await?;
    next_json(&mut socket).await?;
    let current = next_json(&mut socket).await?;
    assert_eq!(changes(&current)[0].0, "current");

    // A reorg of depth 3: three reverts (newest first), then the new branch.
    let old_head = devnet.head().clone();
    let chain = Chain::new(store.as_ref(), Network::Devnet);
    let mut replaced = vec![old_head.clone()];
    for _ in 0..2 {
        let parent = chain.parent(replaced.last().unwrap_or(&old_head))?;
        replaced.push(parent);
    }
    assert!(devnet.reorg(3)?, "the branch is heavier");
    let batch = changes(&next_json(&mut socket).await?);
    println!("reorg of depth 3: {batch:?}");
    let reverts: Vec<i64> = batch
        .iter()
        .filter(|c| c.0 == "revert")
        .map(|c| c.1)
        .collect();
    let applies: Vec<i64> = batch
        .iter()
        .filter(|c| c.0 == "apply")
        .map(|c| c.1)
        .collect();
    let expected: Vec<i64> = replaced.iter().map(TipSet::height).collect();
    assert_eq!(reverts, expected);
    let mut ascending = expected.clone();
    ascending.reverse();
    assert_eq!(applies, ascending);
    assert!(
        batch.iter().position(|c| c.0 == "apply") > batch.iter().rposition(|c| c.0 == "revert")
    );
    // ChainGetPath agrees with the batch.
    let key = |tipset: &TipSet| {
        json!(
            tipset
                .key()
                .cids()
                .iter()
                .map(|c| json!({"/": c.to_string()}))
                .collect::<Vec<_>>()
        )
    };
    let (_, answer) = call(
        server.rpc_address,
        "/rpc/v1",
        None,
        "Filecoin.ChainGetPath",
        json!([key(&old_head), key(devnet.head())]),
    )
    .await?;
    let path: Vec<(String, i64)> = answer["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|change| {
            (
                change["Type"].as_str().unwrap_or_default().to_owned(),
                change["Val"]["Height"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let notified: Vec<(String, i64)> = batch
        .iter()
        .map(|(kind, height, _)| (kind.clone(), *height))
        .collect();
    assert_eq!(path, notified);

    // The head grows by a block at the same height: revert {A}, apply {A, B}
    // (on a head with room for one more block).
    let mut height = devnet.head().height();
    while devnet.head().blocks().count() == 5 {
        height += 1;
        devnet.produce(height)?;
        assert_eq!(changes(&next_json(&mut socket).await?)[0].0, "apply");
    }
    let before = devnet.head().blocks().count();
    devnet.grow_head()?;
    let batch = changes(&next_json(&mut socket).await?);
    println!("growth: {batch:?}");
    let height = devnet.head().height();
    assert_eq!(
        batch,
        [
            ("revert".to_owned(), height, before),
            ("apply".to_owned(), height, before + 1)
        ]
    );
    server.stop().await;
    Ok(())
}

/// Calls `method` on the devnet's server with an optional token: the whole answer.
async fn call(
    address: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> anyhow::Result<(u16, Value)> {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    testdata::post(
        &format!("http://{address}{path}"),
        request.to_string(),
        token,
    )
    .await
}

fn check_shape(document: &str, method: &str, answer: &Value) -> anyhow::Result<()> {
    let Some(example) = testdata::openrpc_example(document, method)? else {
        return Ok(());
    };
    testdata::assert_shape(&answer["result"], &example, method)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_message_is_included_and_its_receipt_found() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, mut devnet) = open(&dir, DevnetOptions::default())?;
    for height in 1..=3 {
        devnet.produce(height)?;
    }
    let auth = crate::rpc::auth::Auth::random()?;
    let write = auth.token(Perm::Write)?;
    let read = auth.token(Perm::Read)?;
    let server = start(
        store.clone(),
        ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), auth),
    )
    .await?;
    let at = server.rpc_address;
    let user = Account::derive(0, 0)?;
    let fresh = Account::derive(99, 1)?.address;

    let (_, nonce) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.MpoolGetNonce",
        json!([user.address.to_string()]),
    )
    .await?;
    assert_eq!(nonce["result"], 0);
    check_shape("gateway.json", "Filecoin.MpoolGetNonce", &nonce)?;
    let signed = user.transfer(fresh, 0, 12_345)?;
    let unsigned = signed.message.clone();
    let message = crate::chain::message::message_to_json(
        &Message {
            gas_limit: 0,
            ..unsigned
        },
        Network::Devnet,
    )?;
    let (_, estimated) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.GasEstimateMessageGas",
        json!([message, null, null]),
    )
    .await?;
    assert!(
        estimated["result"]["GasLimit"]
            .as_u64()
            .is_some_and(|gas| gas > 0),
        "{estimated}"
    );
    check_shape("gateway.json", "Filecoin.GasEstimateMessageGas", &estimated)?;

    // Pushing needs the write permission; a bad token is refused outright.
    let body = json!([signed.to_json(Network::Devnet)?]);
    for token in [None, Some(read.as_str())] {
        let (_, refused) = call(at, "/rpc/v1", token, "Filecoin.MpoolPush", body.clone()).await?;
        let error = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(
            error.contains("missing permission") && error.contains("write"),
            "{refused}"
        );
    }
    let (status, _) = call(
        at,
        "/rpc/v1",
        Some("not-a-token"),
        "Filecoin.MpoolPush",
        body.clone(),
    )
    .await?;
    assert_eq!(status, 401);
    let (_, pushed) = call(
        at,
        "/rpc/v1",
        Some(&write),
        "Filecoin.MpoolPush",
        body.clone(),
    )
    .await?;
    assert_eq!(pushed["result"]["/"], signed.cid()?.to_string());
    check_shape("gateway.json", "Filecoin.MpoolPush", &pushed)?;
    // The same message again is harmless; another one with its nonce is refused.
    let (_, again) = call(at, "/rpc/v1", Some(&write), "Filecoin.MpoolPush", body).await?;
    assert_eq!(again["result"], pushed["result"]);
    let other = json!([user.transfer(fresh, 0, 1)?.to_json(Network::Devnet)?]);
    let (_, clash) = call(at, "/rpc/v1", Some(&write), "Filecoin.MpoolPush", other).await?;
    let error = clash["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("nonce 0"), "{clash}");
    let (_, nonce) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.MpoolGetNonce",
        json!([user.address.to_string()]),
    )
    .await?;
    assert_eq!(nonce["result"], 1);

    // The next tipset includes it; the one after executes it.
    devnet.produce(4)?;
    devnet.produce(5)?;
    tokio::time::sleep(crate::serve::HEAD_POLL * 3).await;
    let cid = json!({"/": signed.cid()?.to_string()});
    let (_, found) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.StateSearchMsg",
        json!([null, cid, -1, true]),
    )
    .await?;
    println!("StateSearchMsg: {found}");
    // As in Lotus, the lookup names the tipset that executed it (whose
    // receipts hold it), the child of the one that included it.
    assert_eq!(found["result"]["Height"], 5);
    assert_eq!(found["result"]["Receipt"]["ExitCode"], 0);
    assert_eq!(found["result"]["Receipt"]["GasUsed"], state::TRANSFER_GAS);
    check_shape("gateway.json", "Filecoin.StateSearchMsg", &found)?;
    // Confidence 1: answered once a tipset is built on the executing one.
    devnet.produce(6)?;
    tokio::time::sleep(crate::serve::HEAD_POLL * 3).await;
    let (_, waited) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.StateWaitMsg",
        json!([cid, 1, -1, true]),
    )
    .await?;
    assert_eq!(waited["result"], found["result"]);
    check_shape("gateway.json", "Filecoin.StateWaitMsg", &waited)?;
    let (_, found_v0) = call(at, "/rpc/v0", None, "Filecoin.StateSearchMsg", json!([cid])).await?;
    check_shape("v0-gateway.json", "Filecoin.StateSearchMsg", &found_v0)?;

    // What the leader API serves resolves through ChainReadObj and hashes to
    // its CID: headers, message lists, receipt lists, state roots.
    let mut objects = 0;
    for (cid, header) in devnet.head().blocks_with_cids() {
        for object in [
            *cid,
            header.messages,
            header.parent_message_receipts,
            header.parent_state_root,
        ] {
            let (_, read) = call(
                at,
                "/rpc/v1",
                None,
                "Filecoin.ChainReadObj",
                json!([{"/": object.to_string()}]),
            )
            .await?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(read["result"].as_str().unwrap_or_default())?;
            cbor::verify(&object, &bytes)?;
            objects += 1;
        }
    }
    assert!(objects >= 4);
    let (_, balance) = call(
        at,
        "/rpc/v1",
        None,
        "Filecoin.WalletBalance",
        json!([fresh.to_string()]),
    )
    .await?;
    assert_eq!(balance["result"], "12345");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_serves_exactly_the_car_up_to_each_height() -> anyhow::Result<()> {
    let Some(car) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let mut replay = replay::Replay::open(store.clone(), &car.to_string_lossy(), Network::Mainnet)?;
    let all = replay.tipsets().to_vec();
    let server = start(
        store.clone(),
        ServeOptions {
            max_lookback_epochs: i64::MAX,
            ..ServeOptions::local(Network::Mainnet)
        },
    )
    .await?;
    let at = server.rpc_address;
    let key = |tipset: &TipSet| {
        json!(
            tipset
                .key()
                .cids()
                .iter()
                .map(|c| json!({"/": c.to_string()}))
                .collect::<Vec<_>>()
        )
    };
    let (mut tipsets, mut nulls) = (0, 0);
    loop {
        let expected = replay.head().clone();
        // The server notices the new head within its poll interval.
        let mut head = Value::Null;
        for _ in 0..40 {
            head = call(at, "/rpc/v1", None, "Filecoin.ChainHead", json!([]))
                .await?
                .1;
            if head["result"]["Height"] == expected.height() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(head["result"]["Cids"], key(&expected));
        for tipset in all.iter().filter(|t| t.height() <= expected.height()) {
            let (_, answer) = call(
                at,
                "/rpc/v1",
                None,
                "Filecoin.ChainGetTipSetByHeight",
                json!([tipset.height(), null]),
            )
            .await?;
            assert_eq!(
                answer["result"]["Cids"],
                key(tipset),
                "height {} at head {}",
                tipset.height(),
                expected.height()
            );
        }
        let (_, beyond) = call(
            at,
            "/rpc/v1",
            None,
            "Filecoin.ChainGetTipSetByHeight",
            json!([expected.height() + 1, null]),
        )
        .await?;
        assert!(
            beyond["error"].is_object(),
            "nothing above the head: {beyond}"
        );
        match replay.step()? {
            replay::Revealed::Tipset(_) => tipsets += 1,
            replay::Revealed::NullRound(_) => nulls += 1,
            replay::Revealed::End => break,
        }
    }
    println!(
        "replayed export40.car: {tipsets} tipsets and {nulls} null rounds after its first tipset"
    );
    assert_eq!(tipsets + 1, all.len());
    assert_eq!(
        replay.head().key(),
        all.last().map(TipSet::key).unwrap_or(replay.head().key())
    );
    server.stop().await;
    Ok(())
}

/// `--api-secret-file`: a token minted from the key file before the devnet
/// starts is accepted by it, and still after a restart on the same file; a
/// token signed with another key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_api_secret_file_are_accepted_before_and_after_a_restart()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("api-secret");
    // Prepared beforehand, as a Kubernetes Secret would hold them.
    let write = api_secret::load_or_create(&key_file)?
        .auth()
        .token(Perm::Write)?;
    let foreign = crate::rpc::auth::Auth::random()?.token(Perm::Write)?;
    let user = Account::derive(0, 0)?;
    let fresh = Account::derive(99, 1)?.address;

    for start_number in [1, 2] {
        // Only the key file carries over from one start to the next: tokens
        // depend on nothing else (the chain's own restart is tested above).
        let chain_dir = tempfile::tempdir()?;
        let (store, mut devnet) = open(&chain_dir, DevnetOptions::default())?;
        devnet.produce(1)?;
        let auth = api_secret::auth(Some(key_file.as_path()))?;
        let server = start(
            store.clone(),
            ServeOptions::local(Network::Devnet).leader(Arc::new(devnet.pool()), auth),
        )
        .await?;
        let at = server.rpc_address;
        // Never included (nothing is produced after it), so nonce 0 again after the restart.
        let body = json!([user.transfer(fresh, 0, 1)?.to_json(Network::Devnet)?]);
        let (status, refused) = call(
            at,
            "/rpc/v1",
            Some(&foreign),
            "Filecoin.MpoolPush",
            body.clone(),
        )
        .await?;
        assert_eq!(status, 401, "another key's token: {refused}");
        let (status, pushed) =
            call(at, "/rpc/v1", Some(&write), "Filecoin.MpoolPush", body).await?;
        assert_eq!(status, 200, "start {start_number}: {pushed}");
        assert!(
            pushed["result"]["/"].is_string(),
            "start {start_number}: {pushed}"
        );
        println!("start {start_number}: MpoolPush accepted the token made beforehand");
        server.stop().await;
        drop((devnet, store));
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file)?.permissions());
    assert_eq!(mode & 0o777, 0o600);
    Ok(())
}
