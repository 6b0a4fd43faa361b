//! The ingester's rule "node present ⇒ subtree complete", checked on a CQL
//! store's own rows: every block in the `blocks` table (complete blocks) must
//! link only to blocks that are complete too. Holding for every stored block,
//! it holds for every subtree, by induction.

use cid::{Cid, multihash::Multihash};
use futures::TryStreamExt;
use lotus_follower::{
    import::links,
    store::{Store, cql::CqlStore},
};
use scylla::client::session::Session;

/// DAG-CBOR: the codec of every Filecoin block that links to others.
const DAG_CBOR: u64 = 0x71;

/// The stored blocks (as CIDs) with a link to a block not stored complete,
/// each with its first missing link. Empty when the rule holds.
pub async fn holes(
    session: &Session,
    keyspace: &str,
    store: &std::sync::Arc<CqlStore>,
) -> anyhow::Result<Vec<(Cid, Cid)>> {
    let mut rows = session
        .query_iter(
            format!("SELECT k, chunk, chunks, data FROM {keyspace}.blocks"),
            (),
        )
        .await?
        .rows_stream::<(Vec<u8>, i32, i32, Vec<u8>)>()?;
    let mut parents = Vec::new();
    while let Some((key, chunk, chunks, data)) = rows.try_next().await? {
        // Chain blocks are far below the chunk size; a chunked block is a
        // raw one (no links) in these tests.
        if chunk != 0 || chunks != 1 {
            continue;
        }
        let cid = Cid::new_v1(DAG_CBOR, Multihash::<64>::from_bytes(&key)?);
        let linked = links(&cid, &data);
        if !linked.is_empty() {
            parents.push((cid, linked));
        }
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Cid, Cid)>> {
        let mut holes = Vec::new();
        for (parent, linked) in parents {
            let linked: Vec<Cid> = linked
                .into_iter()
                .filter(|cid| cid.hash().code() != 0)
                .collect();
            let complete = store.complete_blocks(&linked)?;
            if let Some((missing, _)) = linked
                .into_iter()
                .zip(complete)
                .find(|(_, complete)| !complete)
            {
                holes.push((parent, missing));
            }
        }
        Ok(holes)
    })
    .await?
}
