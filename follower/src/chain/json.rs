//! Lotus's JSON conventions, shared by every type's JSON form: CIDs as
//! `{"/": "bafy…"}`, bytes as base64, big integers as decimal strings, and nil
//! slices as `null`.

use std::str::FromStr;

use base64::{Engine, engine::general_purpose::STANDARD};
use cid::Cid;
use fvm_shared::{
    bigint::BigInt,
    crypto::signature::{Signature, SignatureType},
    econ::TokenAmount,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// A CID in Lotus JSON: `{"/": "bafy…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidJson(pub Cid);

#[derive(Serialize, Deserialize)]
struct CidLink {
    #[serde(rename = "/")]
    link: String,
}

impl Serialize for CidJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CidLink {
            link: self.0.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for CidJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let CidLink { link } = CidLink::deserialize(d)?;
        Cid::from_str(&link)
            .map(CidJson)
            .map_err(|error| D::Error::custom(format!("invalid CID {link:?}: {error}")))
    }
}

pub fn cids_to_json(cids: &[Cid]) -> Vec<CidJson> {
    cids.iter().copied().map(CidJson).collect()
}

pub fn cids_from_json(cids: &[CidJson]) -> Vec<Cid> {
    cids.iter().map(|cid| cid.0).collect()
}

/// Bytes as base64 (standard alphabet, padded), as Go's encoding/json writes `[]byte`.
pub mod base64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // Go writes a nil []byte as null.
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD
            .decode(text.as_bytes())
            .map_err(|error| D::Error::custom(format!("invalid base64: {error}")))
    }
}

/// Bytes as base64, or `null` when empty: Go decodes an empty CBOR byte string
/// into a nil slice, which encoding/json writes as `null` (message params,
/// receipt return values).
pub mod base64_or_null {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if bytes.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&STANDARD.encode(bytes))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        super::base64_bytes::deserialize(d)
    }
}

/// A big integer as a decimal string.
pub mod bigint_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &BigInt, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigInt, D::Error> {
        let text = String::deserialize(d)?;
        BigInt::from_str(&text)
            .map_err(|error| D::Error::custom(format!("invalid big integer {text:?}: {error}")))
    }
}

/// An amount of attoFIL as a decimal string.
pub mod token_amount_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &TokenAmount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.atto().to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenAmount, D::Error> {
        super::bigint_string::deserialize(d).map(TokenAmount::from_atto)
    }
}

/// A signature: `{"Type": 1 | 2, "Data": base64}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureJson {
    #[serde(rename = "Type")]
    pub sig_type: u8,
    #[serde(rename = "Data", with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl From<&Signature> for SignatureJson {
    fn from(signature: &Signature) -> Self {
        Self {
            sig_type: signature.sig_type as u8,
            data: signature.bytes.clone(),
        }
    }
}

impl TryFrom<SignatureJson> for Signature {
    type Error = String;

    fn try_from(json: SignatureJson) -> Result<Self, Self::Error> {
        let sig_type = match json.sig_type {
            1 => SignatureType::Secp256k1,
            2 => SignatureType::BLS,
            other => return Err(format!("unknown signature type {other}")),
        };
        Ok(Signature {
            sig_type,
            bytes: json.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_round_trips_in_lotus_form() -> anyhow::Result<()> {
        let text = r#"{"/":"bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2"}"#;
        let cid: CidJson = serde_json::from_str(text)?;
        assert_eq!(serde_json::to_string(&cid)?, text);
        assert!(serde_json::from_str::<CidJson>(r#"{"/":"not-a-cid"}"#).is_err());
        Ok(())
    }
}
