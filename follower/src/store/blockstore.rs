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
