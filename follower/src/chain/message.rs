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

use super::cbor;

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

#[cfg(test)]
mod tests {
    use super::*;

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
