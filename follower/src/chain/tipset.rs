//! Tipsets and tipset keys.

use std::fmt;

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

use serde::Serialize;

use super::{
    Network,
    block::{BlockHeader, BlockHeaderJson},
    cbor,
    json::{CidJson, cids_to_json},
};

/// The CIDs of a tipset's blocks in the tipset's (ticket) order. A key given by
/// a client may list them in any order; [`TipSetKey::normalized`] names the
/// tipset whatever the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TipSetKey(pub Vec<Cid>);

impl TipSetKey {
    pub fn cids(&self) -> &[Cid] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CIDs' bytes, concatenated (CIDs delimit themselves).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|cid| cid.to_bytes()).collect()
    }

    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self, cid::Error> {
        let mut cids = Vec::new();
        while !bytes.is_empty() {
            cids.push(Cid::read_bytes(&mut bytes)?);
        }
        Ok(Self(cids))
    }

    /// The key with its CIDs sorted by their bytes: the same for every permutation.
    pub fn normalized(&self) -> TipSetKey {
        let mut cids = self.0.clone();
        cids.sort_by_key(|cid| cid.to_bytes());
        cids.dedup();
        TipSetKey(cids)
    }
}

impl fmt::Display for TipSetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, cid) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cid}")?;
        }
        f.write_str("}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TipSetError {
    #[error("a tipset needs at least one block")]
    Empty,
    #[error("blocks of a tipset must share height and parents: {0} differs from the first")]
    Mismatch(Cid),
    #[error("block {0} appears twice")]
    Duplicate(Cid),
    #[error(transparent)]
    Encoding(#[from] cbor::Error),
}

/// A tipset: blocks at one height with the same parents, in ticket order.
#[derive(Debug, Clone, PartialEq)]
pub struct TipSet {
    blocks: Vec<(Cid, BlockHeader)>,
    key: TipSetKey,
}

impl TipSet {
    /// Orders the blocks as Lotus does: by the BLAKE2b-256 of their ticket's VRF
    /// proof, ties broken by CID bytes.
    pub fn new(headers: Vec<BlockHeader>) -> Result<Self, TipSetError> {
        let mut blocks = headers
            .into_iter()
            .map(|header| Ok((header.cid()?, header)))
            .collect::<Result<Vec<_>, cbor::Error>>()?;
        let first = blocks.first().ok_or(TipSetError::Empty)?.1.clone();
        for (cid, header) in &blocks {
            if header.height != first.height || header.parents != first.parents {
                return Err(TipSetError::Mismatch(*cid));
            }
        }
        blocks.sort_by_cached_key(|(cid, header)| {
            let ticket = header
                .ticket
                .as_ref()
                .map(|t| t.vrf_proof.as_slice())
                .unwrap_or_default();
            (
                Code::Blake2b256.digest(ticket).digest().to_vec(),
                cid.to_bytes(),
            )
        });
        for pair in blocks.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(TipSetError::Duplicate(pair[0].0));
            }
        }
        let key = TipSetKey(blocks.iter().map(|(cid, _)| *cid).collect());
        Ok(Self { blocks, key })
    }

    pub fn key(&self) -> &TipSetKey {
        &self.key
    }

    pub fn blocks(&self) -> impl Iterator<Item = &BlockHeader> {
        self.blocks.iter().map(|(_, header)| header)
    }

    pub fn blocks_with_cids(&self) -> &[(Cid, BlockHeader)] {
        &self.blocks
    }

    fn first(&self) -> &BlockHeader {
        // `new` refuses an empty tipset.
        &self.blocks[0].1
    }

    pub fn height(&self) -> i64 {
        self.first().height
    }

    pub fn parents(&self) -> TipSetKey {
        TipSetKey(self.first().parents.clone())
    }

    pub fn parent_state_root(&self) -> Cid {
        self.first().parent_state_root
    }

    pub fn parent_message_receipts(&self) -> Cid {
        self.first().parent_message_receipts
    }

    pub fn timestamp(&self) -> u64 {
        self.first().timestamp
    }
}

/// A tipset in Lotus JSON (`ChainHead`, `ChainGetTipSet`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TipSetJson {
    pub cids: Vec<CidJson>,
    pub blocks: Vec<BlockHeaderJson>,
    pub height: i64,
}

impl TipSet {
    pub fn to_json(&self, network: Network) -> TipSetJson {
        TipSetJson {
            cids: cids_to_json(self.key.cids()),
            blocks: self
                .blocks()
                .map(|header| header.to_json(network))
                .collect(),
            height: self.height(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_normalize() -> anyhow::Result<()> {
        let a = cbor::encode_block(&"a")?.0;
        let b = cbor::encode_block(&"b")?.0;
        let key = TipSetKey(vec![b, a]);
        assert_eq!(TipSetKey::from_bytes(&key.to_bytes())?, key);
        assert_eq!(key.normalized(), TipSetKey(vec![a, b]).normalized());
        assert_eq!(TipSetKey::from_bytes(&[])?, TipSetKey::default());
        Ok(())
    }
}
