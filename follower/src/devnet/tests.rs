//! The devnet on an embedded store, driven step by step with a fake clock: the
//! chain it writes is self-consistent, a restart continues it, and reorgs and
//! growing tipsets reach ChainNotify subscribers as Lotus sends them.

use std::{collections::HashSet, sync::Arc, time::Duration};

use cid::Cid;
use futures::{SinkExt, StreamExt};
use fvm_ipld_amt::Amtv0;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::*;
use crate::{
    chain::{cbor, upgrades::Schedule},
    import::links,
    rpc::Limits,
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
            network: Network::Devnet,
            schedule: Schedule::of(Network::Devnet),
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: None,
            cache_bytes: 16 << 20,
            limits: Limits::default(),
            max_lookback_epochs: i64::MAX,
            max_wait: Duration::from_secs(1),
            pool: None,
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
    devnet.reorg(3)?;
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
    let request = json!({"jsonrpc": "2.0", "id": 2, "method": "Filecoin.ChainGetPath",
                         "params": [key(&old_head), key(devnet.head())]});
    let (_, answer) = testdata::post(
        &format!("http://{}/rpc/v1", server.rpc_address),
        request.to_string(),
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
