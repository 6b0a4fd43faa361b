//! Messages and receipts in Lotus's CBOR encodings.

use std::fmt;

use cid::Cid;
use fvm_ipld_encoding::{RawBytes, tuple::*};
use fvm_shared::{
    crypto::signature::{Signature, SignatureType},
    error::ExitCode,
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, SeqAccess, Visitor},
    ser::SerializeTuple,
};

use super::{
    cbor,
    json::{CidJson, SignatureJson, base64_or_null, token_amount_string},
    network::{Network, parse_address},
};

/// An unsigned message. `fvm_shared`'s type encodes in Lotus's field order.
pub use fvm_shared::message::Message;

/// A signed message: the message and its signature (Lotus `types.SignedMessage`).
#[derive(Debug, Clone, PartialEq, Serialize_tuple, Deserialize_tuple)]
pub struct SignedMessage {
    pub message: Message,
    pub signature: Signature,
}

impl SignedMessage {
    /// The CID Lotus names the message by: a BLS message by its unsigned form (its
    /// signature is aggregated into the block), a secp message by the signed form.
    pub fn cid(&self) -> Result<Cid, cbor::Error> {
        if self.signature.sig_type == SignatureType::BLS {
            message_cid(&self.message)
        } else {
            Ok(cbor::encode_block(self)?.0)
        }
    }
}

pub fn message_cid(message: &Message) -> Result<Cid, cbor::Error> {
    Ok(cbor::encode_block(message)?.0)
}

/// A message receipt. Lotus writes three fields before events existed (network
/// version 18) and four after; both decode, and each encodes as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReceipt {
    pub exit_code: ExitCode,
    pub return_data: RawBytes,
    pub gas_used: u64,
    /// `None` for a three-field receipt; `Some(None)` for a four-field one without events.
    pub events_root: Option<Option<Cid>>,
}

impl Serialize for MessageReceipt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = if self.events_root.is_some() { 4 } else { 3 };
        let mut tuple = s.serialize_tuple(len)?;
        tuple.serialize_element(&self.exit_code)?;
        tuple.serialize_element(&self.return_data)?;
        tuple.serialize_element(&self.gas_used)?;
        if let Some(events_root) = &self.events_root {
            tuple.serialize_element(events_root)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for MessageReceipt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReceiptVisitor;

        impl<'de> Visitor<'de> for ReceiptVisitor {
            type Value = MessageReceipt;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a receipt tuple of 3 or 4 fields")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = |i| de::Error::invalid_length(i, &"3 or 4 fields");
                let exit_code = seq.next_element()?.ok_or_else(|| missing(0))?;
                let return_data = seq.next_element()?.ok_or_else(|| missing(1))?;
                let gas_used = seq.next_element()?.ok_or_else(|| missing(2))?;
                let events_root = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(5, &"3 or 4 fields"));
                }
                Ok(MessageReceipt {
                    exit_code,
                    return_data,
                    gas_used,
                    events_root,
                })
            }
        }

        d.deserialize_seq(ReceiptVisitor)
    }
}

/// The message lists of a block (Lotus `types.MsgMeta`): legacy AMTs of CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct TxMeta {
    pub bls_messages: Cid,
    pub secp_messages: Cid,
}

/// A message in Lotus JSON, with its CID (`ChainGetMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageJson {
    pub version: u64,
    pub to: String,
    pub from: String,
    pub nonce: u64,
    #[serde(with = "token_amount_string")]
    pub value: fvm_shared::econ::TokenAmount,
    pub gas_limit: u64,
    #[serde(with = "token_amount_string")]
    pub gas_fee_cap: fvm_shared::econ::TokenAmount,
    #[serde(with = "token_amount_string")]
    pub gas_premium: fvm_shared::econ::TokenAmount,
    pub method: u64,
    #[serde(with = "base64_or_null", default)]
    pub params: Vec<u8>,
    #[serde(rename = "CID", skip_serializing_if = "Option::is_none", default)]
    pub cid: Option<CidJson>,
}

pub fn message_to_json(message: &Message, network: Network) -> Result<MessageJson, cbor::Error> {
    Ok(MessageJson {
        version: message.version,
        to: network.format_address(&message.to),
        from: network.format_address(&message.from),
        nonce: message.sequence,
        value: message.value.clone(),
        gas_limit: message.gas_limit,
        gas_fee_cap: message.gas_fee_cap.clone(),
        gas_premium: message.gas_premium.clone(),
        method: message.method_num,
        params: message.params.to_vec(),
        cid: Some(CidJson(message_cid(message)?)),
    })
}

/// Parses a message from Lotus JSON (its `CID`, if any, is ignored).
pub fn message_from_json(json: MessageJson) -> Result<Message, String> {
    Ok(Message {
        version: json.version,
        to: parse_address(&json.to).map_err(|e| e.to_string())?,
        from: parse_address(&json.from).map_err(|e| e.to_string())?,
        sequence: json.nonce,
        value: json.value,
        method_num: json.method,
        params: RawBytes::new(json.params),
        gas_limit: json.gas_limit,
        gas_fee_cap: json.gas_fee_cap,
        gas_premium: json.gas_premium,
    })
}

/// A signed message in Lotus JSON, with its CID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignedMessageJson {
    pub message: MessageJson,
    pub signature: SignatureJson,
    #[serde(rename = "CID", skip_serializing_if = "Option::is_none", default)]
    pub cid: Option<CidJson>,
}

impl SignedMessage {
    pub fn to_json(&self, network: Network) -> Result<SignedMessageJson, cbor::Error> {
        Ok(SignedMessageJson {
            message: message_to_json(&self.message, network)?,
            signature: SignatureJson::from(&self.signature),
            cid: Some(CidJson(self.cid()?)),
        })
    }
}

/// A receipt in Lotus JSON (`ChainGetParentReceipts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageReceiptJson {
    pub exit_code: u32,
    #[serde(with = "base64_or_null")]
    pub r#return: Vec<u8>,
    pub gas_used: u64,
    pub events_root: Option<CidJson>,
}

impl MessageReceipt {
    pub fn to_json(&self) -> MessageReceiptJson {
        MessageReceiptJson {
            exit_code: self.exit_code.value(),
            r#return: self.return_data.to_vec(),
            gas_used: self.gas_used,
            events_root: self.events_root.flatten().map(CidJson),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_lotus_json() -> anyhow::Result<()> {
        let message = Message {
            version: 0,
            to: parse_address("f01234")?,
            from: parse_address("f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q")?,
            sequence: 42,
            value: fvm_shared::econ::TokenAmount::from_atto(1_000_000_000_000_000_000u64),
            method_num: 0,
            params: RawBytes::default(),
            gas_limit: 1_000_000,
            gas_fee_cap: fvm_shared::econ::TokenAmount::from_atto(100),
            gas_premium: fvm_shared::econ::TokenAmount::from_atto(1),
        };
        let json = serde_json::to_value(message_to_json(&message, Network::Calibnet)?)?;
        assert_eq!(json["From"], "t1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q");
        assert_eq!(json["Value"], "1000000000000000000");
        assert_eq!(
            json["Params"],
            serde_json::Value::Null,
            "empty params are null, as Go writes them"
        );
        assert_eq!(json["CID"]["/"], message_cid(&message)?.to_string());
        let back = message_from_json(serde_json::from_value(json)?).map_err(anyhow::Error::msg)?;
        assert_eq!(back, message);
        Ok(())
    }

    #[test]
    fn receipts_of_both_eras_round_trip() -> anyhow::Result<()> {
        for events_root in [
            None,
            Some(None),
            Some(Some(cbor::encode_block(&"events")?.0)),
        ] {
            let receipt = MessageReceipt {
                exit_code: ExitCode::new(16),
                return_data: RawBytes::new(vec![1, 2]),
                gas_used: 42,
                events_root,
            };
            let (cid, bytes) = cbor::encode_block(&receipt)?;
            assert_eq!(cbor::decode_block::<MessageReceipt>(&cid, &bytes)?, receipt);
        }
        Ok(())
    }
}
