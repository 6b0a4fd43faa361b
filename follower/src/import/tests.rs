//! Import and query on the shared chain data (`../shared/data/`).

use std::io::Write;

use cid::Cid;
use fvm_shared::{address::Address, econ::TokenAmount};

use super::*;
use crate::{
    chain::{Network, builtin::builtin_actor},
    query::Chain,
    store::embedded::EmbeddedStore,
    testdata,
};

fn open_store() -> anyhow::Result<(tempfile::TempDir, EmbeddedStore)> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    Ok((dir, store))
}

fn import_file(
    store: &dyn Store,
    path: &std::path::Path,
    network: Network,
) -> Result<ImportReport, ImportError> {
    let report = import(store, &path.to_string_lossy(), network, &mut |_| {})?;
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "imported {}: {} blocks, {:.2} MB in {:.3}s ({:.0} blocks/s, {:.1} MB/s); {} tipsets, {} complete / {} partial blocks; head height {}",
        path.display(),
        report.blocks,
        report.bytes as f64 / 1e6,
        seconds,
        report.blocks as f64 / seconds,
        report.bytes as f64 / 1e6 / seconds,
        report.indexed.tipsets,
        report.complete_blocks,
        report.partial_blocks,
        report.head.height,
    );
    Ok(report)
}

const GENESIS_ACTORS: [u64; 8] = [0, 1, 2, 3, 4, 5, 90, 99];

#[test]
fn genesis_cars_import_with_their_actors() -> anyhow::Result<()> {
    for (file, network, name) in [
        ("genesis/mainnet.car", Network::Mainnet, "testnetnet"),
        ("genesis/calibnet.car", Network::Calibnet, "calibrationnet"),
    ] {
        let Some(path) = testdata::path(file)? else {
            continue;
        };
        let (_dir, store) = open_store()?;
        let report = import_file(&store, &path, network)?;
        assert_eq!(report.head.height, 0);
        let chain = Chain::new(&store, network);
        let genesis = chain.head()?;
        assert_eq!(genesis.height(), 0);
        assert_eq!(chain.genesis()?.key(), genesis.key());
        if network == Network::Mainnet {
            assert_eq!(
                genesis.key().cids()[0].to_string(),
                "bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2"
            );
        }
        assert_eq!(chain.network_name(&genesis)?, name);
        assert!(
            report.partial_blocks == 0,
            "a genesis CAR is one complete DAG"
        );

        for id in GENESIS_ACTORS {
            let actor = chain.actor(&Address::new_id(id), &genesis)?;
            let kind = builtin_actor(&actor.code)
                .map(|b| b.name)
                .unwrap_or_default();
            println!(
                "{network} {}: {kind} code {} balance {}",
                network.format_address(&Address::new_id(id)),
                actor.code,
                actor.balance.atto()
            );
            assert!(!kind.is_empty(), "genesis actors have identity code CIDs");
        }
        if network == Network::Mainnet {
            let reserve = chain.actor(&Address::new_id(90), &genesis)?;
            assert_eq!(
                reserve.balance,
                TokenAmount::from_atto(276_400_000_000_000_000_000_000_000u128)
            );
        }

        // Every account with a key address resolves to its ID and back.
        let state = chain.state(&genesis)?;
        let mut accounts = Vec::new();
        state.for_each_actor(|id, actor| {
            if builtin_actor(&actor.code).is_some_and(|b| b.name == "account") {
                accounts.push(id);
            }
        })?;
        let mut resolved = 0;
        for id in &accounts {
            let key = chain.account_key(&Address::new_id(*id), &genesis)?;
            if matches!(
                key.protocol(),
                fvm_shared::address::Protocol::Secp256k1 | fvm_shared::address::Protocol::BLS
            ) {
                // Genesis may create an account without registering its key in
                // the init actor's map (f081 on both networks); Lotus cannot look
                // those up either.
                match chain.lookup_id(&key, &genesis) {
                    Ok(found) => {
                        assert_eq!(found, Address::new_id(*id));
                        resolved += 1;
                    }
                    Err(crate::query::QueryError::State(
                        crate::chain::state::StateError::ActorNotFound(_),
                    )) => {
                        println!(
                            "{network}: f0{id}'s key {} is not in the init actor's map",
                            network.format_address(&key)
                        );
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        println!(
            "{network}: {resolved} of {} genesis accounts resolve robust -> ID -> robust",
            accounts.len()
        );
        assert!(resolved > 0);
        assert!(
            chain.account_key(&Address::new_id(0), &genesis).is_err(),
            "the system actor has no key"
        );
    }
    Ok(())
}

/// Null rounds and multi-block tipsets of `export40.car`.
const NULL_ROUNDS: [i64; 6] = [4, 7, 10, 24, 25, 26];

#[test]
fn every_height_of_export40_resolves_around_null_rounds() -> anyhow::Result<()> {
    let Some(path) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    let (_dir, store) = open_store()?;
    let report = import_file(&store, &path, Network::Mainnet)?;
    assert_eq!(report.head.height, 39);
    let chain = Chain::new(&store, Network::Mainnet);
    let head = chain.head()?;
    let anchor = chain.tipset_by_height(30, &head)?;
    let null_rounds: Vec<i64> = NULL_ROUNDS.into_iter().chain([27]).collect();
    for anchor in [&head, &anchor] {
        for height in 0..=anchor.height() {
            let by = chain.tipset_by_height(height, anchor)?;
            let after = chain.tipset_after_height(height, anchor)?;
            if null_rounds.contains(&height) {
                assert!(
                    by.height() < height && after.height() > height,
                    "null round {height}"
                );
                assert!(
                    !null_rounds.contains(&by.height()) && !null_rounds.contains(&after.height())
                );
                assert_eq!(
                    chain.tipset_after_height(by.height() + 1, anchor)?.key(),
                    after.key()
                );
            } else {
                assert_eq!((by.height(), after.height()), (height, height));
                assert_eq!(by.key(), after.key());
                // The key is the one the chain names: the child's parents.
                if height < anchor.height() {
                    let child = chain.tipset_after_height(height + 1, anchor)?;
                    assert_eq!(&child.parents(), by.key());
                }
                if (29..=38).contains(&height) {
                    assert!(
                        by.key().cids().len() >= 2,
                        "height {height} has a multi-block tipset"
                    );
                }
            }
        }
        assert!(matches!(
            chain.tipset_by_height(anchor.height() + 1, anchor),
            Err(crate::query::QueryError::HeightAboveAnchor { .. })
        ));
    }
    // Any permutation of a tipset's blocks names it.
    let multi = chain.tipset_by_height(33, &head)?;
    let mut reversed = multi.key().clone();
    reversed.0.reverse();
    assert_eq!(chain.tipset(&reversed)?.key(), multi.key());
    // Heights without state say what is missing.
    let error = chain
        .actor(&Address::new_id(0), &head)
        .map(|_| ())
        .expect_err("no state at the head");
    assert!(error.to_string().contains("not in the store"), "{error}");
    Ok(())
}

#[test]
fn chain4_imports_with_messages_indexed() -> anyhow::Result<()> {
    let Some(path) = testdata::path("chains/chain4.car")? else {
        return Ok(());
    };
    let (_dir, store) = open_store()?;
    let report = import_file(&store, &path, Network::Mainnet)?;
    assert_eq!(report.head.height, 3);
    let chain = Chain::new(&store, Network::Mainnet);
    let head = chain.head()?;
    let mut found = 0;
    for height in 0..=3 {
        let tipset = chain.tipset_by_height(height, &head)?;
        let Ok(messages) = chain.tipset_messages(&tipset) else {
            continue;
        };
        for (index, message) in messages.iter().enumerate() {
            let lookup = chain
                .search_message(&message.cid, &head, None)?
                .expect("an indexed message is found");
            assert_eq!(lookup.included.key(), tipset.key());
            assert_eq!(lookup.index as usize, index);
            let by_nonce =
                chain.messages_by_nonce(&message.sender, message.message.sequence, &head)?;
            assert!(
                by_nonce
                    .iter()
                    .any(|(cid, ts)| *cid == message.cid && ts.key() == tipset.key())
            );
            found += 1;
        }
    }
    println!("chain4: {found} messages indexed and found");
    assert!(found > 0, "chain4.car carries messages");
    // A block's parent messages are its parent tipset's.
    let top = head.key().cids()[0];
    let parent = chain.parent(&head)?;
    if let Ok(expected) = chain.tipset_messages(&parent) {
        assert_eq!(chain.parent_messages(&top)?, expected);
    }
    assert!(
        chain
            .search_message(&Cid::default(), &head, None)?
            .is_none()
    );
    Ok(())
}

/// The CAR's bytes cut off after `keep` bytes.
fn truncated(
    path: &std::path::Path,
    keep: usize,
    dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let bytes = std::fs::read(path)?;
    let out = dir.join("truncated.car");
    std::fs::write(&out, &bytes[..keep.min(bytes.len())])?;
    Ok(out)
}

/// Every complete block's links are complete: the ingester's rule holds.
fn assert_no_trusted_holes(store: &dyn Store, car: &std::path::Path) -> anyhow::Result<usize> {
    let mut stream = CarStream::open(std::fs::File::open(car)?)?;
    let mut complete = std::collections::HashSet::new();
    while let Some(frame) = stream.next_frame(|_| false)? {
        let Frame::Block { cid, data } = frame else {
            continue;
        };
        if cid.hash().code() != crate::chain::cbor::IDENTITY_HASH
            && store.has_complete_block(&cid)?
        {
            complete.insert(cid);
            for link in verify::links(&cid, &data) {
                assert!(
                    link.hash().code() == crate::chain::cbor::IDENTITY_HASH
                        || store.has_complete_block(&link)?,
                    "complete block {cid} links to {link}, which is not complete"
                );
            }
        }
    }
    Ok(complete.len())
}

#[test]
fn a_truncated_car_changes_neither_head_nor_indices() -> anyhow::Result<()> {
    let (Some(chain4), Some(export40)) = (
        testdata::path("chains/chain4.car")?,
        testdata::path("chains/export40.car")?,
    ) else {
        return Ok(());
    };
    let (dir, store) = open_store()?;
    import_file(&store, &chain4, Network::Mainnet)?;
    let head_before = store.head()?;
    let len = std::fs::metadata(&export40)?.len() as usize;
    for keep in [len / 2, len - 7] {
        let cut = truncated(&export40, keep, dir.path())?;
        let error =
            import_file(&store, &cut, Network::Mainnet).expect_err("a truncated CAR is refused");
        println!("truncated at {keep} of {len} bytes: {error}");
        assert!(error.to_string().contains("truncated"), "{error}");
        assert_eq!(store.head()?, head_before);
        assert!(store.tipsets_at_height(39)?.is_empty() && store.tipsets_at_height(20)?.is_empty());
        assert_no_trusted_holes(&store, &export40)?;
    }
    let corrupt = dir.path().join("corrupt.car");
    let mut bytes = std::fs::read(&export40)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&corrupt, bytes)?;
    let error =
        import_file(&store, &corrupt, Network::Mainnet).expect_err("a corrupt block is refused");
    assert!(
        error.to_string().contains("does not match its CID"),
        "{error}"
    );
    assert_eq!(store.head()?, head_before);
    Ok(())
}

#[test]
fn an_import_killed_part_way_is_completed_by_a_rerun() -> anyhow::Result<()> {
    let Some(genesis) = testdata::path("genesis/mainnet.car")? else {
        return Ok(());
    };
    let (dir, store) = open_store()?;
    // Killed part-way: everything before the cut was staged, nothing after.
    let len = std::fs::metadata(&genesis)?.len() as usize;
    let cut = truncated(&genesis, len * 2 / 3, dir.path())?;
    assert!(import_file(&store, &cut, Network::Mainnet).is_err());
    assert!(store.head()?.is_none());
    assert_eq!(
        assert_no_trusted_holes(&store, &genesis)?,
        0,
        "nothing is trusted before the DAG is verified"
    );

    let report = import_file(&store, &genesis, Network::Mainnet)?;
    assert_eq!(report.partial_blocks, 0);
    let complete = assert_no_trusted_holes(&store, &genesis)?;
    assert_eq!(
        complete as u64, report.complete_blocks,
        "the rerun completed every block"
    );
    let chain = Chain::new(&store, Network::Mainnet);
    assert_eq!(chain.network_name(&chain.head()?)?, "testnetnet");
    Ok(())
}

#[test]
fn a_v2_snapshot_of_export40_imports_with_the_same_head() -> anyhow::Result<()> {
    let Some(export40) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    let (dir, plain_store) = open_store()?;
    let plain = import_file(&plain_store, &export40, Network::Mainnet)?;

    // FRC-0108: one root, the metadata block; the F3 section; then the chain.
    let mut source = CarStream::open(std::fs::File::open(&export40)?)?;
    let f3_section: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let f3_cid = Cid::new_v1(
        0x55,
        multihash_codetable::MultihashDigest::digest(
            &multihash_codetable::Code::Blake2b256,
            &f3_section,
        ),
    );
    let metadata = SnapshotMetadata {
        version: 2,
        head_tipset_keys: source.roots.clone(),
        f3_data: Some(f3_cid),
    };
    let (metadata_cid, metadata_bytes) = cbor::encode_block(&metadata)?;
    let mut car = Vec::new();
    let mut writer =
        fvm_ipld_car::CarWriter::new(fvm_ipld_car::CarHeader::from(vec![metadata_cid]), &mut car)?;
    writer.write(fvm_ipld_car::Block {
        cid: metadata_cid,
        data: metadata_bytes,
    })?;
    writer.write(fvm_ipld_car::Block {
        cid: f3_cid,
        data: f3_section,
    })?;
    while let Some(Frame::Block { cid, data }) = source.next_frame(|_| false)? {
        writer.write(fvm_ipld_car::Block { cid, data })?;
    }
    writer.flush()?;
    drop(writer);
    // Two zstd frames, as multi-frame snapshots have.
    let (first, second) = car.split_at(car.len() / 2);
    let snapshot = dir.path().join("snapshot.car.zst");
    let mut file = std::fs::File::create(&snapshot)?;
    file.write_all(&zstd::encode_all(first, 3)?)?;
    file.write_all(&zstd::encode_all(second, 3)?)?;
    drop(file);

    let (_dir2, store) = open_store()?;
    let report = import_file(&store, &snapshot, Network::Mainnet)?;
    assert_eq!(report.head.tipset, plain.head.tipset);
    assert_eq!(report.skipped_f3_bytes, 3_000_000);
    assert_eq!(report.indexed.tipsets, plain.indexed.tipsets);
    assert!(
        !store.has_block(&f3_cid)?,
        "the F3 section is streamed past, not stored"
    );
    Ok(())
}

/// Serves `body` once over HTTP on 127.0.0.1; returns the URL.
fn serve_once(body: Vec<u8>) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/export40.car", listener.local_addr()?);
    std::thread::spawn(move || -> std::io::Result<()> {
        let (stream, _) = listener.accept()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(&body)
    });
    Ok(url)
}

#[test]
fn imports_from_an_http_url() -> anyhow::Result<()> {
    let Some(export40) = testdata::path("chains/export40.car")? else {
        return Ok(());
    };
    let url = serve_once(zstd::encode_all(std::fs::read(&export40)?.as_slice(), 3)?)?;
    let (_dir, store) = open_store()?;
    let report = import(&store, &url, Network::Mainnet, &mut |_| {})?;
    assert_eq!(report.head.height, 39);
    Ok(())
}

#[test]
fn json_forms_have_lotus_shapes() -> anyhow::Result<()> {
    let (Some(chain4), Some(genesis)) = (
        testdata::path("chains/chain4.car")?,
        testdata::path("genesis/mainnet.car")?,
    ) else {
        return Ok(());
    };
    let example = |method: &str| -> anyhow::Result<serde_json::Value> {
        testdata::openrpc_example("gateway.json", method)?
            .ok_or_else(|| anyhow::anyhow!("no gateway.json"))
    };
    let (_dir, store) = open_store()?;
    import_file(&store, &genesis, Network::Mainnet)?;
    import_file(&store, &chain4, Network::Mainnet)?;
    let chain = Chain::new(&store, Network::Mainnet);
    let head = chain.head()?;
    let genesis_tipset = chain.genesis()?;

    let checks = [
        (
            "Filecoin.ChainHead",
            serde_json::to_value(head.to_json(Network::Mainnet))?,
        ),
        (
            "Filecoin.ChainGetBlock",
            serde_json::to_value(
                chain
                    .block(&head.key().cids()[0])?
                    .to_json(Network::Mainnet),
            )?,
        ),
        (
            "Filecoin.StateGetActor",
            serde_json::to_value(
                chain
                    .actor(&Address::new_id(90), &genesis_tipset)?
                    .to_json(Network::Mainnet),
            )?,
        ),
    ];
    for (method, ours) in checks {
        testdata::assert_shape(&ours, &example(method)?, method)?;
    }
    let mut messages_checked = 0;
    for height in 1..=head.height() {
        let tipset = chain.tipset_by_height(height, &head)?;
        let Ok(messages) = chain.tipset_messages(&tipset) else {
            continue;
        };
        for included in messages {
            let ours = serde_json::to_value(crate::chain::message::message_to_json(
                &included.message,
                Network::Mainnet,
            )?)?;
            testdata::assert_shape(
                &ours,
                &example("Filecoin.ChainGetMessage")?,
                "ChainGetMessage",
            )?;
            messages_checked += 1;
        }
        if let Ok(receipts) = chain.parent_receipts(&tipset.key().cids()[0]) {
            let ours =
                serde_json::to_value(receipts.iter().map(|r| r.to_json()).collect::<Vec<_>>())?;
            testdata::assert_shape(
                &ours,
                &example("Filecoin.ChainGetParentReceipts")?,
                "ChainGetParentReceipts",
            )?;
        }
    }
    println!("Lotus JSON shapes match the OpenRPC examples ({messages_checked} messages)");
    Ok(())
}
