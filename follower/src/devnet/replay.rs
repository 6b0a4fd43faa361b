//! `devnet --replay <car>`: a real chain revealed one epoch per block time.
//! The CAR is imported whole (every block verified), then the head is moved
//! back to its lowest tipset and forward one epoch at a time, so a follower
//! sees the chain grow as it did, null rounds included, with the CAR's
//! headers unchanged.

use std::{sync::Arc, time::Duration};

use super::DevnetError;
use crate::{
    chain::{Network, TipSet},
    import::{self, ImportError},
    query::Chain,
    store::{Head, Store},
};

#[derive(Debug)]
pub struct Replay {
    store: Arc<dyn Store>,
    /// The CAR's tipsets, lowest first.
    tipsets: Vec<TipSet>,
    /// Index of the tipset the head names.
    position: usize,
    /// The epoch the head is in: past the head's height through null rounds.
    epoch: i64,
    head_version: u64,
}

/// What one epoch of replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revealed {
    Tipset(i64),
    NullRound(i64),
    /// The CAR's head is reached: nothing more to reveal.
    End,
}

impl Replay {
    /// Imports `car` into `store` and moves the head to its lowest tipset.
    pub fn open(store: Arc<dyn Store>, car: &str, network: Network) -> Result<Self, DevnetError> {
        let report = import::import(store.as_ref(), car, network, &mut |_| {})
            .map_err(|error: ImportError| DevnetError::Replay(error.to_string()))?;
        let chain = Chain::new(store.as_ref(), network);
        let mut tipset = chain.tipset(&report.head.tipset)?;
        let mut tipsets = vec![tipset.clone()];
        while tipset.height() > report.indexed.lowest_height {
            tipset = chain.parent(&tipset)?;
            tipsets.push(tipset.clone());
        }
        tipsets.reverse();
        let mut replay = Self {
            store,
            epoch: tipsets[0].height(),
            tipsets,
            position: 0,
            head_version: report.head.version,
        };
        replay.set_head()?;
        Ok(replay)
    }

    pub fn head(&self) -> &TipSet {
        &self.tipsets[self.position]
    }

    /// Every tipset of the CAR, lowest first.
    pub fn tipsets(&self) -> &[TipSet] {
        &self.tipsets
    }

    fn set_head(&mut self) -> Result<(), DevnetError> {
        let tipset = &self.tipsets[self.position];
        let version = self.head_version + 1;
        self.store.set_head(
            Some(self.head_version),
            Head {
                tipset: tipset.key().clone(),
                height: tipset.height(),
                version,
                term: super::TERM,
            },
        )?;
        self.head_version = version;
        Ok(())
    }

    /// Advances one epoch: the next tipset when its height is reached.
    pub fn step(&mut self) -> Result<Revealed, DevnetError> {
        let Some(next) = self.tipsets.get(self.position + 1) else {
            return Ok(Revealed::End);
        };
        self.epoch += 1;
        if next.height() > self.epoch {
            return Ok(Revealed::NullRound(self.epoch));
        }
        self.position += 1;
        self.set_head()?;
        Ok(Revealed::Tipset(self.epoch))
    }

    /// Reveals one epoch per `block_time` until the CAR ends or `stop` turns true.
    pub async fn run(
        mut self,
        block_time: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), DevnetError> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(block_time) => {}
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
            match tokio::task::block_in_place(|| self.step())? {
                Revealed::Tipset(height) => tracing::info!(height, "replayed"),
                Revealed::NullRound(height) => tracing::info!(height, "null round"),
                Revealed::End => {
                    tracing::info!(
                        height = self.head().height(),
                        "the replayed chain ends here; serving it"
                    );
                    let _ = stop.wait_for(|stop| *stop).await;
                    return Ok(());
                }
            }
        }
    }
}
