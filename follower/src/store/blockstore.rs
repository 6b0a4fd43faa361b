//! The store as an IPLD blockstore for the HAMT and AMT crates: read-only, with
//! identity-hashed CIDs (early actor code CIDs) answered from the CID itself.

use cid::Cid;
use fvm_ipld_blockstore::Blockstore;

use super::Store;
use crate::chain::cbor::IDENTITY_HASH;

#[derive(Debug, Clone, Copy)]
pub struct StoreBlockstore<'a, S: ?Sized>(pub &'a S);

impl<S: Store + ?Sized> Blockstore for StoreBlockstore<'_, S> {
    fn get(&self, cid: &Cid) -> anyhow::Result<Option<Vec<u8>>> {
        if cid.hash().code() == IDENTITY_HASH {
            return Ok(Some(cid.hash().digest().to_vec()));
        }
        Ok(self.0.get_block(cid)?)
    }

    fn put_keyed(&self, cid: &Cid, _block: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the store is read-only here (writing block {cid})")
    }

    fn has(&self, cid: &Cid) -> anyhow::Result<bool> {
        Ok(cid.hash().code() == IDENTITY_HASH || self.0.has_block(cid)?)
    }
}

/// The store failure behind an error of the IPLD crates, if that is what it
/// was: their blockstore calls return `anyhow` errors, which the AMT and HAMT
/// wrap as `Dynamic`. Telling these apart from "not there" or "malformed" is
/// what keeps an outage from being answered as "not in the store".
pub fn store_failure(error: &anyhow::Error) -> Option<String> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<super::StoreError>())
        .map(ToString::to_string)
}

/// [`store_failure`] for the AMT's errors.
pub fn amt_store_failure(error: &fvm_ipld_amt::Error) -> Option<String> {
    match error {
        fvm_ipld_amt::Error::Dynamic(inner) => store_failure(inner),
        _ => None,
    }
}

/// [`store_failure`] for the HAMT's errors.
pub fn hamt_store_failure(error: &fvm_ipld_hamt::Error) -> Option<String> {
    match error {
        fvm_ipld_hamt::Error::Dynamic(inner) => store_failure(inner),
        _ => None,
    }
}
