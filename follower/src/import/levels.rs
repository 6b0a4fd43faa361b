//! The order in which a set of blocks may be stored so that "present ⇒
//! complete" holds after any failure: children before parents. A backend
//! writes one batch's rows in any order (CQL sends them concurrently, and a
//! failed write leaves any subset), so the writer splits the blocks into
//! levels, each a batch written only after the one before it is whole.

use std::collections::HashMap;

use cid::Cid;

/// A block to store, with the blocks it links to.
pub type Linked = (Cid, Vec<u8>, Vec<Cid>);

/// `blocks` grouped into levels: every link from a block to another block of
/// the set points into an earlier level (links outside the set are already
/// stored, or the block is not complete and is not being stored as such).
/// Level `n` holds the blocks whose longest path down into the set is `n`.
pub fn children_first(blocks: Vec<Linked>) -> Vec<Vec<(Cid, Vec<u8>)>> {
    let index: HashMap<Cid, usize> = blocks
        .iter()
        .enumerate()
        .map(|(at, (cid, _, _))| (*cid, at))
        .collect();
    let heights = heights(&blocks, &index);
    let mut levels: Vec<Vec<(Cid, Vec<u8>)>> =
        vec![Vec::new(); heights.iter().max().map_or(0, |top| top + 1)];
    for ((cid, data, _), height) in blocks.into_iter().zip(heights) {
        levels[height].push((cid, data));
    }
    levels
}

/// Each block's longest path down into the set, by an explicit depth-first
/// walk (a header chain is as deep as it is long).
fn heights(blocks: &[Linked], index: &HashMap<Cid, usize>) -> Vec<usize> {
    const UNKNOWN: usize = usize::MAX;
    let mut height = vec![UNKNOWN; blocks.len()];
    let children = |at: usize| {
        blocks[at]
            .2
            .iter()
            .filter_map(|link| index.get(link).copied())
            .filter(move |&child| child != at)
    };
    for root in 0..blocks.len() {
        if height[root] != UNKNOWN {
            continue;
        }
        // (block, whether its children were pushed)
        let mut stack = vec![(root, false)];
        while let Some((at, expanded)) = stack.pop() {
            if height[at] != UNKNOWN {
                continue;
            }
            if expanded {
                // Content addressing makes a cycle impossible; were one forged,
                // a child still unknown here counts as a leaf.
                height[at] = children(at)
                    .map(|child| height[child].wrapping_add(1))
                    .filter(|&h| h != 0)
                    .max()
                    .unwrap_or(0);
                continue;
            }
            stack.push((at, true));
            stack.extend(
                children(at)
                    .filter(|&child| height[child] == UNKNOWN)
                    .map(|child| (child, false)),
            );
        }
    }
    height
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::cbor;

    fn block(links: Vec<Cid>, name: &str) -> anyhow::Result<Linked> {
        let (cid, data) = cbor::encode_block(&(name, links.clone()))?;
        Ok((cid, data, links))
    }

    /// Every link inside the set points into an earlier level, whatever the
    /// order the blocks came in; links outside the set do not matter.
    #[test]
    fn every_block_comes_after_the_blocks_it_links_to() -> anyhow::Result<()> {
        let outside = cbor::encode_block(&"stored already")?.0;
        let leaf = block(vec![outside], "leaf")?;
        let middle = block(vec![leaf.0], "middle")?;
        // `top` links to the leaf directly and through `middle`: its level is
        // set by the longer path.
        let top = block(vec![leaf.0, middle.0, outside], "top")?;
        let side = block(vec![], "side")?;
        let cids = [top.0, middle.0, leaf.0, side.0];
        let levels = children_first(vec![top, side, leaf, middle]);
        let level_of = |cid: &Cid| {
            levels
                .iter()
                .position(|level| level.iter().any(|(c, _)| c == cid))
        };
        assert_eq!(
            cids.iter().map(level_of).collect::<Vec<_>>(),
            vec![Some(2), Some(1), Some(0), Some(0)]
        );
        assert!(children_first(Vec::new()).is_empty());
        Ok(())
    }

    /// A header chain thousands deep is ordered without recursion.
    #[test]
    fn a_long_chain_takes_a_level_per_link() -> anyhow::Result<()> {
        let mut chain = vec![block(vec![], "0")?];
        for at in 1..5000 {
            let below = chain[at - 1].0;
            chain.push(block(vec![below], &at.to_string())?);
        }
        let first = chain[0].0;
        chain.reverse();
        let levels = children_first(chain);
        assert_eq!(levels.len(), 5000);
        assert_eq!(levels[0][0].0, first);
        Ok(())
    }
}
