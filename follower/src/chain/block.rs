//! The block header, in Lotus's CBOR tuple encoding and its JSON form.

use cid::Cid;
use fvm_ipld_encoding::{strict_bytes, tuple::*};
use fvm_shared::{
    address::Address,
    bigint::{BigInt, bigint_ser},
    crypto::signature::Signature,
    econ::TokenAmount,
    sector::{PoStProof, RegisteredPoStProof},
};
use serde::{Deserialize, Serialize};

use super::{
    cbor,
    json::{CidJson, SignatureJson, base64_bytes, cids_from_json, cids_to_json},
    network::{Network, parse_address},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Ticket {
    #[serde(with = "strict_bytes")]
    pub vrf_proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct ElectionProof {
    pub win_count: i64,
    #[serde(with = "strict_bytes")]
    pub vrf_proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct BeaconEntry {
    pub round: u64,
    #[serde(with = "strict_bytes")]
    pub data: Vec<u8>,
}

/// A Filecoin block header (Lotus `types.BlockHeader`), fields in wire order.
#[derive(Debug, Clone, PartialEq, Serialize_tuple, Deserialize_tuple)]
pub struct BlockHeader {
    pub miner: Address,
    pub ticket: Option<Ticket>,
    pub election_proof: Option<ElectionProof>,
    pub beacon_entries: Vec<BeaconEntry>,
    pub win_post_proof: Vec<PoStProof>,
    pub parents: Vec<Cid>,
    #[serde(with = "bigint_ser")]
    pub parent_weight: BigInt,
    pub height: i64,
    pub parent_state_root: Cid,
    pub parent_message_receipts: Cid,
    pub messages: Cid,
    pub bls_aggregate: Option<Signature>,
    pub timestamp: u64,
    pub block_sig: Option<Signature>,
    pub fork_signaling: u64,
    pub parent_base_fee: TokenAmount,
}

impl BlockHeader {
    /// The header's CID: DAG-CBOR, BLAKE2b-256, as Lotus computes it.
    pub fn cid(&self) -> Result<Cid, cbor::Error> {
        Ok(cbor::encode_block(self)?.0)
    }
}

/// The header in Lotus JSON (`ChainGetBlock`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BlockHeaderJson {
    pub miner: String,
    pub ticket: Option<TicketJson>,
    pub election_proof: Option<ElectionProofJson>,
    pub beacon_entries: Option<Vec<BeaconEntryJson>>,
    #[serde(rename = "WinPoStProof")]
    pub win_post_proof: Option<Vec<PoStProofJson>>,
    pub parents: Vec<CidJson>,
    pub parent_weight: String,
    pub height: i64,
    pub parent_state_root: CidJson,
    pub parent_message_receipts: CidJson,
    pub messages: CidJson,
    #[serde(rename = "BLSAggregate")]
    pub bls_aggregate: Option<SignatureJson>,
    pub timestamp: u64,
    pub block_sig: Option<SignatureJson>,
    pub fork_signaling: u64,
    pub parent_base_fee: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketJson {
    #[serde(rename = "VRFProof", with = "base64_bytes")]
    pub vrf_proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionProofJson {
    #[serde(rename = "WinCount")]
    pub win_count: i64,
    #[serde(rename = "VRFProof", with = "base64_bytes")]
    pub vrf_proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconEntryJson {
    #[serde(rename = "Round")]
    pub round: u64,
    #[serde(rename = "Data", with = "base64_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoStProofJson {
    #[serde(rename = "PoStProof")]
    pub post_proof: i64,
    #[serde(rename = "ProofBytes", with = "base64_bytes")]
    pub proof_bytes: Vec<u8>,
}

/// Go's encoding/json writes an empty (nil) slice as `null`.
fn nil_if_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

impl BlockHeader {
    pub fn to_json(&self, network: Network) -> BlockHeaderJson {
        BlockHeaderJson {
            miner: network.format_address(&self.miner),
            ticket: self.ticket.as_ref().map(|t| TicketJson {
                vrf_proof: t.vrf_proof.clone(),
            }),
            election_proof: self.election_proof.as_ref().map(|e| ElectionProofJson {
                win_count: e.win_count,
                vrf_proof: e.vrf_proof.clone(),
            }),
            beacon_entries: nil_if_empty(
                self.beacon_entries
                    .iter()
                    .map(|b| BeaconEntryJson {
                        round: b.round,
                        data: b.data.clone(),
                    })
                    .collect(),
            ),
            win_post_proof: nil_if_empty(
                self.win_post_proof
                    .iter()
                    .map(|p| PoStProofJson {
                        post_proof: i64::from(p.post_proof),
                        proof_bytes: p.proof_bytes.clone(),
                    })
                    .collect(),
            ),
            parents: cids_to_json(&self.parents),
            parent_weight: self.parent_weight.to_string(),
            height: self.height,
            parent_state_root: CidJson(self.parent_state_root),
            parent_message_receipts: CidJson(self.parent_message_receipts),
            messages: CidJson(self.messages),
            bls_aggregate: self.bls_aggregate.as_ref().map(SignatureJson::from),
            timestamp: self.timestamp,
            block_sig: self.block_sig.as_ref().map(SignatureJson::from),
            fork_signaling: self.fork_signaling,
            parent_base_fee: self.parent_base_fee.atto().to_string(),
        }
    }

    pub fn from_json(json: BlockHeaderJson) -> Result<Self, String> {
        let big = |text: &str| {
            text.parse::<BigInt>()
                .map_err(|e| format!("invalid big integer {text:?}: {e}"))
        };
        Ok(Self {
            miner: parse_address(&json.miner).map_err(|e| e.to_string())?,
            ticket: json.ticket.map(|t| Ticket {
                vrf_proof: t.vrf_proof,
            }),
            election_proof: json.election_proof.map(|e| ElectionProof {
                win_count: e.win_count,
                vrf_proof: e.vrf_proof,
            }),
            beacon_entries: json
                .beacon_entries
                .unwrap_or_default()
                .into_iter()
                .map(|b| BeaconEntry {
                    round: b.round,
                    data: b.data,
                })
                .collect(),
            win_post_proof: json
                .win_post_proof
                .unwrap_or_default()
                .into_iter()
                .map(|p| PoStProof {
                    post_proof: RegisteredPoStProof::from(p.post_proof),
                    proof_bytes: p.proof_bytes,
                })
                .collect(),
            parents: cids_from_json(&json.parents),
            parent_weight: big(&json.parent_weight)?,
            height: json.height,
            parent_state_root: json.parent_state_root.0,
            parent_message_receipts: json.parent_message_receipts.0,
            messages: json.messages.0,
            bls_aggregate: json.bls_aggregate.map(Signature::try_from).transpose()?,
            timestamp: json.timestamp,
            block_sig: json.block_sig.map(Signature::try_from).transpose()?,
            fork_signaling: json.fork_signaling,
            parent_base_fee: TokenAmount::from_atto(big(&json.parent_base_fee)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn calibnet_block_3000_round_trips_to_its_cid() -> anyhow::Result<()> {
        let Some(text) = testdata::read_string("chains/calibnet_block_3000.json")? else {
            return Ok(());
        };
        let json: BlockHeaderJson = serde_json::from_str(&text)?;
        let header = BlockHeader::from_json(json.clone()).map_err(anyhow::Error::msg)?;
        assert_eq!(
            header.cid()?.to_string(),
            "bafy2bzacecpjvcld56dazyukvj35uzwvlh3tb4ga2lvbgbiua3mgbqaz45hbm"
        );
        // And back: the same JSON, and the same bytes through CBOR.
        assert_eq!(header.to_json(Network::Calibnet), json);
        let (cid, bytes) = cbor::encode_block(&header)?;
        let decoded: BlockHeader = cbor::decode_block(&cid, &bytes)?;
        assert_eq!(decoded, header);
        Ok(())
    }
}
