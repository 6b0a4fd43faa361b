//! Blocks in and out: DAG-CBOR encoding with the CIDs Lotus computes, and the
//! check that a block taken from outside matches its CID.

use cid::Cid;
use fvm_ipld_encoding::DAG_CBOR;
use multihash_codetable::{Code, MultihashDigest};
use serde::{Serialize, de::DeserializeOwned};

/// The multihash code of identity "hashes", whose digest is the data itself.
pub const IDENTITY_HASH: u64 = 0x00;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("cannot decode block {cid} as {what}: {reason}")]
    Decode {
        cid: Cid,
        what: &'static str,
        reason: String,
    },
    #[error("block {cid} does not match its CID (the data hashes to something else)")]
    HashMismatch { cid: Cid },
    #[error("block {cid} uses multihash code {code:#x}, which the follower cannot verify")]
    UnsupportedHash { cid: Cid, code: u64 },
}

/// Encodes `value` as a DAG-CBOR block with a BLAKE2b-256 CID.
pub fn encode_block<T: Serialize>(value: &T) -> Result<(Cid, Vec<u8>), Error> {
    let bytes = fvm_ipld_encoding::to_vec(value).map_err(|error| Error::Encode {
        what: std::any::type_name::<T>(),
        reason: error.to_string(),
    })?;
    let cid = Cid::new_v1(DAG_CBOR, Code::Blake2b256.digest(&bytes));
    Ok((cid, bytes))
}

/// BLAKE2b-256, the hash Filecoin signs and derives randomness with.
pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    let hash = blake2b_simd::Params::new().hash_length(32).hash(data);
    let mut out = [0; 32];
    out.copy_from_slice(hash.as_bytes());
    out
}

/// An identity-hashed CID: the data is carried in the CID itself (early actor
/// code CIDs are such: `fil/1/account`, …).
pub fn identity_cid(codec: u64, data: &[u8]) -> Result<Cid, Error> {
    let hash =
        cid::multihash::Multihash::wrap(IDENTITY_HASH, data).map_err(|error| Error::Encode {
            what: "an identity CID",
            reason: error.to_string(),
        })?;
    Ok(Cid::new_v1(codec, hash))
}

/// Checks that `bytes` hash to `cid`'s multihash.
pub fn verify(cid: &Cid, bytes: &[u8]) -> Result<(), Error> {
    let hash = cid.hash();
    if hash.code() == IDENTITY_HASH {
        return if hash.digest() == bytes {
            Ok(())
        } else {
            Err(Error::HashMismatch { cid: *cid })
        };
    }
    let code = Code::try_from(hash.code()).map_err(|_| Error::UnsupportedHash {
        cid: *cid,
        code: hash.code(),
    })?;
    if code.digest(bytes).digest() == hash.digest() {
        Ok(())
    } else {
        Err(Error::HashMismatch { cid: *cid })
    }
}

/// Decodes a block already known to match its CID.
pub fn decode<T: DeserializeOwned>(cid: &Cid, bytes: &[u8]) -> Result<T, Error> {
    fvm_ipld_encoding::from_slice(bytes).map_err(|error| Error::Decode {
        cid: *cid,
        what: std::any::type_name::<T>(),
        reason: error.to_string(),
    })
}

/// Verifies a block from outside against its CID, then decodes it.
pub fn decode_block<T: DeserializeOwned>(cid: &Cid, bytes: &[u8]) -> Result<T, Error> {
    verify(cid, bytes)?;
    decode(cid, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_blocks_against_their_cids() -> anyhow::Result<()> {
        let (cid, bytes) = encode_block(&(1u64, "two"))?;
        verify(&cid, &bytes)?;
        let decoded: (u64, String) = decode_block(&cid, &bytes)?;
        assert_eq!(decoded, (1, "two".to_owned()));
        let mut tampered = bytes.clone();
        tampered[1] ^= 1;
        assert!(matches!(
            verify(&cid, &tampered),
            Err(Error::HashMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn identity_cids_carry_their_data() -> anyhow::Result<()> {
        let data = b"fil/1/system";
        let cid = identity_cid(0x55, data)?;
        verify(&cid, data)?;
        assert!(verify(&cid, b"fil/1/init").is_err());
        Ok(())
    }
}
