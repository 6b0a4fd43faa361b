//! Waiting for a condition with a timeout, never a bare sleep: a probe is polled
//! until it reports [`Check::Done`], and a timeout names what was awaited and the
//! last state seen, which is what one needs to debug a slow or stuck component.

use std::{fmt::Display, future::Future, time::Duration};

use tokio::time::{Instant, sleep};

const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a probe saw.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds; the wait ends with this value.
    Done(T),
    /// Not yet; the text says what was seen instead.
    Pending(String),
}

impl<T> Check<T> {
    /// `Done(value)` when `done`, otherwise `Pending` with the observation.
    pub fn when(done: bool, value: T, observed: impl Display) -> Self {
        if done {
            Check::Done(value)
        } else {
            Check::Pending(observed.to_string())
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}; last seen: {last_seen}")]
pub struct WaitTimeout {
    pub what: String,
    pub timeout: Duration,
    pub last_seen: String,
}

/// Polls `probe` until it returns `Done`, or fails after `timeout`. A probe error
/// (say, a transient API error) counts as "not yet" and is reported on timeout.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last_seen = match probe().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::Pending(observed)) => observed,
            Err(error) => format!("error: {error:#}"),
        };
        if Instant::now() >= deadline {
            return Err(WaitTimeout {
                what: what.to_owned(),
                timeout,
                last_seen,
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_done() -> anyhow::Result<()> {
        let mut polls = 0;
        let value = wait_until("three polls", Duration::from_secs(5), || {
            polls += 1;
            let seen = polls;
            async move { Ok(Check::when(seen >= 3, seen, format!("{seen} polls"))) }
        })
        .await?;
        assert_eq!(value, 3);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_the_last_observation() {
        let error = wait_until("never", Duration::from_secs(1), || async {
            Ok(Check::<()>::Pending("still 1/3 ready".into()))
        })
        .await
        .expect_err("the condition never holds");
        assert_eq!(error.what, "never");
        assert_eq!(error.last_seen, "still 1/3 ready");
        assert!(error.to_string().contains("waiting for never"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_error_is_not_final() -> anyhow::Result<()> {
        let mut polls = 0;
        let value = wait_until("recovery", Duration::from_secs(5), || {
            polls += 1;
            let seen = polls;
            async move {
                anyhow::ensure!(seen > 1, "connection refused");
                Ok(Check::Done(seen))
            }
        })
        .await?;
        assert_eq!(value, 2);
        Ok(())
    }
}
