//! Tipsets by height relative to an anchor, with Lotus's null-round rules, and
//! message search on the anchor's chain. Near the anchor the chain is walked
//! through parents, so a reorg needs no "canonical" flag to flip; far below it
//! (past finality) the height index is used where it is unambiguous.

use cid::Cid;

use super::{Chain, FINALITY, QueryError, Result};
use crate::chain::{MessageReceipt, TipSet};

/// Where a message was found on the anchor's chain.
#[derive(Debug, Clone)]
pub struct MessageLookup {
    /// The tipset that includes the message.
    pub included: TipSet,
    /// Its position in that tipset's messages (and in the receipts).
    pub index: u32,
    /// The tipset where it was executed (the next non-null one), if the
    /// anchor's chain reaches it.
    pub executed: Option<TipSet>,
    /// Its receipt, if that tipset's receipts are stored.
    pub receipt: Option<MessageReceipt>,
}

impl Chain<'_> {
    /// `ChainGetTipSetByHeight`: the tipset at `height` on the anchor's chain or,
    /// for a null round, the first non-null one below it.
    pub fn tipset_by_height(&self, height: i64, anchor: &TipSet) -> Result<TipSet> {
        let found = self.lowest_at_or_above(height, anchor)?;
        if found.height() == height {
            Ok(found)
        } else {
            self.parent(&found)
        }
    }

    /// `ChainGetTipSetAfterHeight`: the first tipset at or above `height`.
    pub fn tipset_after_height(&self, height: i64, anchor: &TipSet) -> Result<TipSet> {
        self.lowest_at_or_above(height, anchor)
    }

    /// The lowest tipset of the anchor's chain at or above `height`.
    fn lowest_at_or_above(&self, height: i64, anchor: &TipSet) -> Result<TipSet> {
        if height > anchor.height() {
            return Err(QueryError::HeightAboveAnchor {
                height,
                anchor: anchor.height(),
            });
        }
        if height < 0 {
            return Err(QueryError::Invalid(format!("height {height} is negative")));
        }
        let mut current = anchor.clone();
        if anchor.height() - height > FINALITY
            && let Some(indexed) = self.final_from_index(height, anchor.height() - FINALITY)?
        {
            current = indexed;
        }
        while current.height() > height {
            let parent = self.parent(&current)?;
            if parent.height() < height {
                break;
            }
            current = parent;
        }
        Ok(current)
    }

    /// Below finality the chain is settled: the index's tipset at the lowest
    /// populated height in `height..=limit`, unless a height there holds several
    /// tipsets (a fork was recorded), in which case the caller walks.
    fn final_from_index(&self, height: i64, limit: i64) -> Result<Option<TipSet>> {
        for candidate_height in height..=limit {
            match self.store.tipsets_at_height(candidate_height)?.as_slice() {
                [] => continue,
                [only] => return Ok(Some(self.tipset(only)?)),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The way from `from` to `to` (`ChainGetPath`, ChainNotify batches): the
    /// tipsets to revert, from `from` down to the common ancestor, then the
    /// tipsets to apply, from above the ancestor up to `to`.
    pub fn path(&self, from: &TipSet, to: &TipSet) -> Result<(Vec<TipSet>, Vec<TipSet>)> {
        let (mut left, mut right) = (from.clone(), to.clone());
        let (mut reverts, mut applies) = (Vec::new(), Vec::new());
        while left.key() != right.key() {
            if left.height() >= right.height() {
                let parent = self.parent(&left)?;
                reverts.push(std::mem::replace(&mut left, parent));
            } else {
                let parent = self.parent(&right)?;
                applies.push(std::mem::replace(&mut right, parent));
            }
        }
        applies.reverse();
        Ok((reverts, applies))
    }

    /// Whether `tipset` is on `anchor`'s chain.
    pub fn is_on_chain(&self, tipset: &TipSet, anchor: &TipSet) -> Result<bool> {
        if tipset.height() > anchor.height() {
            return Ok(false);
        }
        Ok(self.tipset_by_height(tipset.height(), anchor)?.key() == tipset.key())
    }

    /// Finds a message included on the anchor's chain, at most `lookback`
    /// epochs below the anchor (`None`: no limit).
    pub fn search_message(
        &self,
        message: &Cid,
        anchor: &TipSet,
        lookback: Option<i64>,
    ) -> Result<Option<MessageLookup>> {
        let lowest = lookback.map_or(0, |epochs| anchor.height().saturating_sub(epochs));
        for inclusion in self.store.inclusions(message)? {
            let included = match self.tipset(&inclusion.tipset) {
                Ok(tipset) => tipset,
                Err(QueryError::TipSetNotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            if included.height() < lowest || !self.is_on_chain(&included, anchor)? {
                continue;
            }
            let executed = if included.height() < anchor.height() {
                Some(self.tipset_after_height(included.height() + 1, anchor)?)
            } else {
                None
            };
            let receipt = match &executed {
                Some(child) => {
                    let first_block = child.key().cids()[0];
                    match self.parent_receipts(&first_block) {
                        Ok(receipts) => receipts.get(inclusion.index as usize).cloned(),
                        Err(QueryError::NotInStore { .. }) => None,
                        Err(error) => return Err(error),
                    }
                }
                None => None,
            };
            return Ok(Some(MessageLookup {
                included,
                index: inclusion.index,
                executed,
                receipt,
            }));
        }
        Ok(None)
    }
}
