//! The head-change feed behind `ChainNotify`: one task turns each new head into
//! Lotus's `[]HeadChange` once and broadcasts it, so a thousand subscribers cost
//! one path computation per head change, not a thousand.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::{SeenHead, methods::Context};
use crate::chain::TipSetKey;

/// One head change, ready to send.
#[derive(Debug)]
pub struct HeadUpdate {
    /// The head before (`None` for the first head this server saw).
    pub from: Option<TipSetKey>,
    pub to: TipSetKey,
    /// What a new subscriber gets first: `[{"Type": "current", …}]`.
    pub current: Arc<Value>,
    /// Reverts then applies from `from` to `to` (`current` when `from` is `None`).
    pub changes: Arc<Value>,
}

/// Updates queued per subscriber before it counts as lagging (it then
/// computes its own path once; see [`catch_up`]).
const BACKLOG: usize = 64;

#[derive(Debug, Clone)]
pub struct HeadFeed {
    latest: watch::Receiver<Option<Arc<HeadUpdate>>>,
    updates: broadcast::Sender<Arc<HeadUpdate>>,
}

impl HeadFeed {
    /// The feed, and the task that fills it from the head watch until the
    /// watch ends.
    pub fn start(
        ctx: Context,
        mut head: watch::Receiver<Option<SeenHead>>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (latest_sender, latest) = watch::channel(None);
        let (updates, _) = broadcast::channel(BACKLOG);
        let feed = Self {
            latest,
            updates: updates.clone(),
        };
        let task = tokio::spawn(async move {
            let mut last: Option<TipSetKey> = None;
            loop {
                let seen = head.borrow_and_update().clone().map(|seen| seen.tipset);
                if let Some(to) = seen
                    && Some(&to) != last.as_ref()
                {
                    let ctx = ctx.clone();
                    let (from, key) = (last.clone(), to.clone());
                    let computed =
                        tokio::task::spawn_blocking(move || compute(&ctx, from.as_ref(), &key))
                            .await;
                    match computed {
                        Ok(Ok((current, changes))) => {
                            let update = Arc::new(HeadUpdate {
                                from: last.replace(to.clone()),
                                to,
                                current: Arc::new(current),
                                changes: Arc::new(changes),
                            });
                            // The latest first, then the broadcast: a subscriber
                            // that joins in between sees it in both and skips
                            // the second (its `to` is what it already has).
                            latest_sender.send_replace(Some(update.clone()));
                            let _ = updates.send(update);
                        }
                        // Retried at the next head change (or poll): the store
                        // may be briefly unreachable.
                        Ok(Err(error)) => tracing::warn!("ChainNotify feed: {error:#}"),
                        Err(error) => tracing::warn!("ChainNotify feed failed: {error}"),
                    }
                }
                if head.changed().await.is_err() {
                    return;
                }
            }
        });
        (feed, task)
    }

    /// The newest update, and a receiver for the ones after it.
    pub fn subscribe(
        &self,
    ) -> (
        Option<Arc<HeadUpdate>>,
        broadcast::Receiver<Arc<HeadUpdate>>,
    ) {
        let receiver = self.updates.subscribe();
        let latest = self.latest.borrow().clone();
        (latest, receiver)
    }

    /// Waits for the first head when the store had none yet.
    pub async fn first(&self) -> Option<Arc<HeadUpdate>> {
        let mut latest = self.latest.clone();
        latest
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|update| update.clone())
    }
}

fn compute(
    ctx: &Context,
    from: Option<&TipSetKey>,
    to: &TipSetKey,
) -> anyhow::Result<(Value, Value)> {
    let chain = ctx.chain();
    let to = chain.tipset(to)?;
    let current = json!([{"Type": "current", "Val": to.to_json(ctx.network)}]);
    let changes = match from {
        None => current.clone(),
        Some(from) => {
            let from = chain.tipset(from)?;
            let (reverts, applies) = chain.path(&from, &to)?;
            super::methods::chain::head_changes(ctx, &reverts, &applies)
        }
    };
    Ok((current, changes))
}

/// A subscriber that missed updates (it lagged) computes its own way from the
/// head it last sent to `to`: rare, and only for that subscriber.
pub async fn catch_up(ctx: &Context, from: &TipSetKey, to: &TipSetKey) -> anyhow::Result<Value> {
    let ctx = ctx.clone();
    let (from, to) = (from.clone(), to.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        Ok(compute(&ctx, Some(&from), &to)?.1)
    })
    .await?
}
