//! The conformance suite every [`Store`] backend must pass, written once.
//! A backend's tests instantiate it with [`store_conformance_tests!`], giving a
//! function that opens a fresh, empty store (and a guard that keeps it alive).

use std::{sync::Arc, thread};

use anyhow::{Context, ensure};
use cid::Cid;

use super::{Head, Inclusion, NonceUse, SCHEMA, Store, StoreError, WriteBatch};
use crate::chain::{TipSetKey, cbor, network::parse_address};

/// Generates one `#[test]` per conformance check for a backend.
/// `$open` is a function `() -> anyhow::Result<(Guard, impl Store + 'static)>`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($open:path) => {
        mod conformance {
            use super::*;
            use $crate::store::conformance as suite;

            #[test]
            fn blocks_complete_and_partial() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::blocks_complete_and_partial(&store)
            }
            #[test]
            fn tipsets_by_height_and_any_key_order() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::tipsets_by_height_and_any_key_order(&store)
            }
            #[test]
            fn message_indices_across_forks() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::message_indices_across_forks(&store)
            }
            #[test]
            fn head_protocol() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::head_protocol(&store)
            }
            #[test]
            fn reverts_keep_every_fork() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::reverts_keep_every_fork(&store)
            }
            #[test]
            fn schema_versions() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::schema_versions(&store)
            }
            #[test]
            fn readers_never_see_a_head_before_its_data() -> anyhow::Result<()> {
                let (_guard, store) = $open()?;
                suite::readers_never_see_a_head_before_its_data(std::sync::Arc::new(store))
            }
        }
    };
}

fn block(name: &str) -> anyhow::Result<(Cid, Vec<u8>)> {
    Ok(cbor::encode_block(&name)?)
}

fn cid(name: &str) -> anyhow::Result<Cid> {
    Ok(block(name)?.0)
}

fn tipset(names: &[&str]) -> anyhow::Result<TipSetKey> {
    Ok(TipSetKey(
        names
            .iter()
            .map(|name| cid(name))
            .collect::<anyhow::Result<_>>()?,
    ))
}

fn head(tipset: &TipSetKey, height: i64, version: u64, term: u64) -> Head {
    Head {
        tipset: tipset.clone(),
        height,
        version,
        term,
    }
}

pub fn blocks_complete_and_partial(store: &dyn Store) -> anyhow::Result<()> {
    let (complete, complete_data) = block("complete")?;
    let (partial, partial_data) = block("partial")?;
    let missing = cid("missing")?;
    store.write(WriteBatch {
        blocks: vec![(complete, complete_data.clone())],
        partial_blocks: vec![(partial, partial_data.clone())],
        ..WriteBatch::default()
    })?;
    ensure!(store.get_block(&complete)? == Some(complete_data.clone()));
    ensure!(
        store.get_block(&partial)? == Some(partial_data.clone()),
        "partial blocks are readable"
    );
    ensure!(store.has_block(&partial)? && !store.has_complete_block(&partial)?);
    ensure!(store.has_complete_block(&complete)?);
    ensure!(store.get_block(&missing)?.is_none() && !store.has_block(&missing)?);

    // A partial write never downgrades a complete block; a complete one upgrades a partial.
    store.write(WriteBatch {
        blocks: vec![(partial, partial_data)],
        partial_blocks: vec![(complete, complete_data)],
        ..WriteBatch::default()
    })?;
    ensure!(store.has_complete_block(&complete)? && store.has_complete_block(&partial)?);
    // Blocks are keyed by multihash: the same bytes under another codec are found.
    let raw = Cid::new_v1(0x55, *complete.hash());
    ensure!(store.has_block(&raw)?, "blocks are keyed by multihash");
    Ok(())
}

pub fn tipsets_by_height_and_any_key_order(store: &dyn Store) -> anyhow::Result<()> {
    let genesis = tipset(&["g"])?;
    let one = tipset(&["b1", "a1", "c1"])?;
    let fork = tipset(&["x1"])?;
    store.write(WriteBatch {
        tipsets: vec![(0, genesis.clone()), (1, one.clone()), (1, fork.clone())],
        ..WriteBatch::default()
    })?;
    ensure!(store.tipsets_at_height(0)? == vec![genesis.clone()]);
    let mut at_one = store.tipsets_at_height(1)?;
    at_one.sort();
    let mut expected = vec![one.clone(), fork];
    expected.sort();
    ensure!(
        at_one == expected,
        "both tipsets of a fork are kept: {at_one:?}"
    );
    ensure!(store.tipsets_at_height(2)?.is_empty() && store.tipsets_at_height(-1)?.is_empty());

    let permuted = TipSetKey(vec![one.0[2], one.0[0], one.0[1]]);
    ensure!(
        store.tipset_key(&permuted)? == Some(one.clone()),
        "any permutation names the tipset, canonical order back"
    );
    ensure!(
        store.tipset_key(&tipset(&["a1", "b1"])?)?.is_none(),
        "a subset is another tipset"
    );
    // Writing the same tipset again changes nothing.
    store.write(WriteBatch {
        tipsets: vec![(1, one)],
        ..WriteBatch::default()
    })?;
    ensure!(store.tipsets_at_height(1)?.len() == 2);
    Ok(())
}

pub fn message_indices_across_forks(store: &dyn Store) -> anyhow::Result<()> {
    let message = cid("message")?;
    let other = cid("other message")?;
    let on_a = Inclusion {
        tipset: tipset(&["a"])?,
        index: 3,
    };
    let on_b = Inclusion {
        tipset: tipset(&["b", "c"])?,
        index: 0,
    };
    let sender = parse_address("f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q")?;
    let id_sender = parse_address("f01234")?;
    store.write(WriteBatch {
        inclusions: vec![
            (message, on_a.clone()),
            (message, on_b.clone()),
            (other, on_a.clone()),
        ],
        nonce_uses: vec![
            (
                sender,
                7,
                NonceUse {
                    message,
                    tipset: on_a.tipset.clone(),
                },
            ),
            (
                sender,
                7,
                NonceUse {
                    message,
                    tipset: on_b.tipset.clone(),
                },
            ),
            (
                id_sender,
                7,
                NonceUse {
                    message: other,
                    tipset: on_a.tipset.clone(),
                },
            ),
        ],
        ..WriteBatch::default()
    })?;
    let mut found = store.inclusions(&message)?;
    found.sort();
    let mut expected = vec![on_a.clone(), on_b.clone()];
    expected.sort();
    ensure!(
        found == expected,
        "a message on two forks is indexed on both: {found:?}"
    );
    ensure!(store.inclusions(&other)? == vec![on_a.clone()]);
    ensure!(store.inclusions(&cid("never included")?)?.is_empty());

    let uses = store.nonce_uses(&sender, 7)?;
    ensure!(
        uses.len() == 2 && uses.iter().all(|u| u.message == message),
        "{uses:?}"
    );
    ensure!(store.nonce_uses(&sender, 8)?.is_empty() && store.nonce_uses(&sender, 6)?.is_empty());
    ensure!(
        store.nonce_uses(&id_sender, 7)?
            == vec![NonceUse {
                message: other,
                tipset: on_a.tipset
            }]
    );
    Ok(())
}

pub fn head_protocol(store: &dyn Store) -> anyhow::Result<()> {
    let first = tipset(&["first"])?;
    let second = tipset(&["second"])?;
    ensure!(store.head()?.is_none());
    let refused = store.set_head(None, head(&first, 1, 1, 1));
    ensure!(
        matches!(refused, Err(StoreError::UnknownTipSet(_))),
        "a head must name a stored tipset: {refused:?}"
    );
    store.write(WriteBatch {
        tipsets: vec![(1, first.clone()), (2, second.clone())],
        ..WriteBatch::default()
    })?;
    store.set_head(None, head(&first, 1, 1, 1))?;
    ensure!(store.head()? == Some(head(&first, 1, 1, 1)));

    let conflict = store.set_head(None, head(&second, 2, 2, 1));
    ensure!(
        matches!(conflict, Err(StoreError::HeadConflict { .. })),
        "{conflict:?}"
    );
    let not_growing = store.set_head(Some(1), head(&second, 2, 1, 1));
    ensure!(
        matches!(not_growing, Err(StoreError::VersionNotGrowing { .. })),
        "{not_growing:?}"
    );
    store.set_head(Some(1), head(&second, 2, 2, 3))?;
    let stale = store.set_head(Some(2), head(&first, 1, 3, 2));
    ensure!(
        matches!(
            stale,
            Err(StoreError::StaleTerm {
                current: 3,
                attempted: 2
            })
        ),
        "{stale:?}"
    );
    ensure!(
        store.head()? == Some(head(&second, 2, 2, 3)),
        "refused updates change nothing"
    );
    Ok(())
}

pub fn reverts_keep_every_fork(store: &dyn Store) -> anyhow::Result<()> {
    let base = tipset(&["base"])?;
    let a = tipset(&["a"])?;
    let ab = tipset(&["a", "b"])?;
    store.write(WriteBatch {
        tipsets: vec![(0, base.clone()), (1, a.clone())],
        ..WriteBatch::default()
    })?;
    store.set_head(None, head(&a, 1, 1, 1))?;
    // The tipset grows at the same height: revert {a}, apply {a, b}.
    store.write(WriteBatch {
        tipsets: vec![(1, ab.clone())],
        ..WriteBatch::default()
    })?;
    store.set_head(Some(1), head(&ab, 1, 2, 1))?;
    ensure!(store.head()?.map(|h| h.tipset) == Some(ab.clone()));
    ensure!(
        store.tipset_key(&a)? == Some(a.clone()),
        "the reverted tipset stays readable by key"
    );
    ensure!(store.tipsets_at_height(1)?.len() == 2);
    // And back to the base (a deeper revert) with a newer version.
    store.set_head(Some(2), head(&base, 0, 3, 1))?;
    ensure!(store.head()?.map(|h| h.height) == Some(0));
    Ok(())
}

pub fn schema_versions(store: &dyn Store) -> anyhow::Result<()> {
    ensure!(store.schema()?.is_none());
    ensure!(matches!(store.check_readable(), Err(StoreError::NoSchema)));
    ensure!(store.migrate()? == SCHEMA);
    ensure!(store.migrate()? == SCHEMA, "migrating again is a no-op");
    ensure!(store.check_readable()? == SCHEMA);
    Ok(())
}

pub fn readers_never_see_a_head_before_its_data(store: Arc<dyn Store>) -> anyhow::Result<()> {
    const ROUNDS: u64 = 200;
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || -> anyhow::Result<()> {
            for round in 1..=ROUNDS {
                let (block_cid, data) = block(&format!("header {round}"))?;
                let key = TipSetKey(vec![block_cid]);
                store.write(WriteBatch {
                    blocks: vec![(block_cid, data)],
                    tipsets: vec![(round as i64, key.clone())],
                    ..WriteBatch::default()
                })?;
                let expected = (round > 1).then_some(round - 1);
                store.set_head(expected, head(&key, round as i64, round, 1))?;
            }
            Ok(())
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            thread::spawn(move || -> anyhow::Result<u64> {
                let mut last_version = 0;
                while last_version < ROUNDS {
                    let Some(head) = store.head()? else { continue };
                    ensure!(
                        head.version >= last_version,
                        "the head went back from {last_version} to {}",
                        head.version
                    );
                    last_version = head.version;
                    for cid in head.tipset.cids() {
                        ensure!(
                            store.has_complete_block(cid)?,
                            "head {} names block {cid} not yet stored",
                            head.version
                        );
                    }
                    ensure!(
                        store.tipset_key(&head.tipset)?.is_some(),
                        "head's tipset not yet indexed"
                    );
                }
                Ok(last_version)
            })
        })
        .collect();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    for reader in readers {
        let seen = reader
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        ensure!(seen == ROUNDS);
    }
    let final_head = store.head()?.context("a head after the writes")?;
    ensure!(final_head.version == ROUNDS);
    Ok(())
}
