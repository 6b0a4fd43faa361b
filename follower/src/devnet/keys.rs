//! The devnet's accounts: deterministic keys from a seed, so a restarted devnet
//! (and a test) derives the same ones. Account 0 is never used by the devnet's
//! own traffic: it is the funded account users and tests sign with.

use cid::Cid;
use fvm_shared::{
    address::Address,
    crypto::signature::{Signature, SignatureType},
    econ::TokenAmount,
};

use crate::chain::{
    Message, SignedMessage,
    cbor::{self, blake2b_256},
    message::message_cid,
};

/// A devnet account's key: secp256k1 (real signatures, verifiable by anyone),
/// or a BLS-shaped one (48-byte public key, 96-byte signatures that only have
/// BLS's shape: the devnet verifies no BLS signature, and accepts none pushed).
#[derive(Debug, Clone)]
pub enum Key {
    Secp(libsecp256k1::SecretKey),
    Bls([u8; 32]),
}

#[derive(Debug, Clone)]
pub struct Account {
    pub key: Key,
    pub address: Address,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid secp256k1 key: {0}")]
    Secp(String),
    #[error("invalid address: {0}")]
    Address(String),
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

fn secret(seed: u64, index: u64) -> [u8; 32] {
    blake2b_256(format!("lotus-follower devnet account {seed}/{index}").as_bytes())
}

impl Account {
    /// Account `index` of the devnet seeded with `seed`: every fourth one is
    /// BLS-shaped, the others secp256k1 (account 0 is always secp).
    pub fn derive(seed: u64, index: u64) -> Result<Self, KeyError> {
        let secret = secret(seed, index);
        if index % 4 == 3 {
            let public = [
                blake2b_256(&secret),
                blake2b_256(&[secret, [1; 32]].concat()),
            ]
            .concat();
            let address = Address::new_bls(&public[..48])
                .map_err(|error| KeyError::Address(error.to_string()))?;
            return Ok(Account {
                key: Key::Bls(secret),
                address,
            });
        }
        let key = libsecp256k1::SecretKey::parse(&secret)
            .map_err(|error| KeyError::Secp(error.to_string()))?;
        let public = libsecp256k1::PublicKey::from_secret_key(&key).serialize();
        let address = Address::new_secp256k1(&public)
            .map_err(|error| KeyError::Address(error.to_string()))?;
        Ok(Account {
            key: Key::Secp(key),
            address,
        })
    }

    /// A signed plain transfer of `value` attoFIL to `to`, with the gas fields
    /// a wallet would fill in.
    pub fn transfer(&self, to: Address, nonce: u64, value: u64) -> Result<SignedMessage, KeyError> {
        self.sign(Message {
            version: 0,
            to,
            from: self.address,
            sequence: nonce,
            value: TokenAmount::from_atto(value),
            method_num: 0,
            params: Default::default(),
            gas_limit: 1_000_000,
            gas_fee_cap: TokenAmount::from_atto(200),
            gas_premium: TokenAmount::from_atto(100),
        })
    }

    pub fn is_bls(&self) -> bool {
        matches!(self.key, Key::Bls(_))
    }

    /// Signs as Filecoin does: over the BLAKE2b-256 of the message's CID bytes
    /// (secp: 64-byte signature and the recovery byte).
    pub fn sign(&self, message: Message) -> Result<SignedMessage, KeyError> {
        let cid = message_cid(&message)?;
        let signature = match &self.key {
            Key::Secp(key) => secp_signature(key, &cid),
            Key::Bls(secret) => Signature {
                sig_type: SignatureType::BLS,
                bytes: [
                    blake2b_256(&[secret.as_slice(), &cid.to_bytes()].concat()),
                    blake2b_256(&cid.to_bytes()),
                    blake2b_256(secret),
                ]
                .concat(),
            },
        };
        Ok(SignedMessage { message, signature })
    }
}

fn secp_signature(key: &libsecp256k1::SecretKey, cid: &Cid) -> Signature {
    let digest = libsecp256k1::Message::parse(&blake2b_256(&cid.to_bytes()));
    let (signature, recovery) = libsecp256k1::sign(&digest, key);
    let mut bytes = signature.serialize().to_vec();
    bytes.push(recovery.serialize());
    Signature {
        sig_type: SignatureType::Secp256k1,
        bytes,
    }
}

/// Whether a secp256k1 signed message was signed by its sender's key.
pub fn verify_secp(signed: &SignedMessage) -> Result<bool, KeyError> {
    let bytes = &signed.signature.bytes;
    if signed.signature.sig_type != SignatureType::Secp256k1 || bytes.len() != 65 {
        return Ok(false);
    }
    let cid = message_cid(&signed.message)?;
    let digest = libsecp256k1::Message::parse(&blake2b_256(&cid.to_bytes()));
    let Ok(signature) = libsecp256k1::Signature::parse_standard_slice(&bytes[..64]) else {
        return Ok(false);
    };
    let Ok(recovery) = libsecp256k1::RecoveryId::parse(bytes[64]) else {
        return Ok(false);
    };
    let Ok(public) = libsecp256k1::recover(&digest, &signature, &recovery) else {
        return Ok(false);
    };
    let signer = Address::new_secp256k1(&public.serialize())
        .map_err(|error| KeyError::Address(error.to_string()))?;
    Ok(signer == signed.message.from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_deterministic_and_sign_verifiably() -> anyhow::Result<()> {
        let zero = Account::derive(7, 0)?;
        assert_eq!(zero.address, Account::derive(7, 0)?.address);
        assert_ne!(zero.address, Account::derive(8, 0)?.address);
        assert!(Account::derive(7, 3)?.is_bls());
        let signed = zero.transfer(Account::derive(7, 1)?.address, 0, 5)?;
        assert!(verify_secp(&signed)?);
        let mut forged = signed.clone();
        forged.message.value = TokenAmount::from_atto(6);
        assert!(!verify_secp(&forged)?);
        Ok(())
    }
}
