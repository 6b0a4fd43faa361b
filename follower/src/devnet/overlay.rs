//! A blockstore over the store that keeps what is written in memory: the HAMT
//! and AMT crates write a new state tree or message list into it, and the
//! producer hands the new blocks to the store in one atomic batch.

use std::{cell::RefCell, collections::HashMap};

use cid::Cid;
use fvm_ipld_blockstore::Blockstore;
use serde::Serialize;

use crate::{
    chain::cbor,
    store::{Store, StoreBlockstore},
};

#[derive(Debug)]
pub struct Overlay<'a> {
    store: &'a dyn Store,
    written: RefCell<HashMap<Cid, Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a dyn Store) -> Self {
        Self {
            store,
            written: RefCell::default(),
        }
    }

    /// Encodes and keeps a DAG-CBOR block; returns its CID.
    pub fn put<T: Serialize>(&self, value: &T) -> Result<Cid, cbor::Error> {
        let (cid, bytes) = cbor::encode_block(value)?;
        self.written.borrow_mut().insert(cid, bytes);
        Ok(cid)
    }

    /// Everything written, for the store's batch.
    pub fn into_blocks(self) -> Vec<(Cid, Vec<u8>)> {
        self.written.into_inner().into_iter().collect()
    }
}

impl Blockstore for Overlay<'_> {
    fn get(&self, cid: &Cid) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.written.borrow().get(cid) {
            return Ok(Some(bytes.clone()));
        }
        StoreBlockstore(self.store).get(cid)
    }

    fn put_keyed(&self, cid: &Cid, block: &[u8]) -> anyhow::Result<()> {
        self.written.borrow_mut().insert(*cid, block.to_vec());
        Ok(())
    }

    fn has(&self, cid: &Cid) -> anyhow::Result<bool> {
        Ok(self.written.borrow().contains_key(cid) || StoreBlockstore(self.store).has(cid)?)
    }
}
