//! Which builtin actor a code CID names. Actors v0–v7 name their code with
//! identity-hashed raw CIDs whose data is `fil/<version>/<name>`, readable inline.
//! (From actors v8 the code CIDs are real hashes listed in the system actor's
//! manifest; reading that manifest comes with the devnet's and the ingester's
//! newer state trees.)

use cid::Cid;

use super::cbor::IDENTITY_HASH;

/// The builtin actor behind a code CID: its actors version and name ("account",
/// "init", "storageminer", …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinActor {
    pub version: u32,
    pub name: String,
}

pub fn builtin_actor(code: &Cid) -> Option<BuiltinActor> {
    let hash = code.hash();
    if hash.code() != IDENTITY_HASH {
        return None;
    }
    let text = std::str::from_utf8(hash.digest()).ok()?;
    let mut parts = text.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("fil"), Some(version), Some(name), None) => Some(BuiltinActor {
            version: version.parse().ok()?,
            name: name.to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use multihash_codetable::{Code, MultihashDigest};

    use super::*;
    use crate::chain::cbor::identity_cid;

    #[test]
    fn reads_identity_code_cids() -> anyhow::Result<()> {
        let code = identity_cid(0x55, b"fil/1/account")?;
        assert_eq!(
            builtin_actor(&code),
            Some(BuiltinActor {
                version: 1,
                name: "account".into()
            })
        );
        let hashed = Cid::new_v1(0x55, Code::Blake2b256.digest(b"fil/1/account"));
        assert_eq!(builtin_actor(&hashed), None);
        Ok(())
    }
}
