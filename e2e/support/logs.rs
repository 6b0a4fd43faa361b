//! The components' logs when a test fails: a test body runs through
//! [`TestBed::run`], which prints the end of every log in the test bed's log
//! directory if the body returns an error or panics.

use std::{future::Future, panic::AssertUnwindSafe, path::Path};

use futures::FutureExt;

use crate::TestBed;

/// Lines printed from the end of each component's log.
const TAIL_LINES: usize = 40;

impl TestBed {
    /// Runs one test's body; on failure, dumps the component logs first.
    pub async fn run<T>(&self, body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        match AssertUnwindSafe(body).catch_unwind().await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                dump_logs(&self.log_dir);
                Err(error)
            }
            Err(panic) => {
                dump_logs(&self.log_dir);
                std::panic::resume_unwind(panic)
            }
        }
    }
}

fn dump_logs(dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!(
                "(no component logs: cannot read {}: {error})",
                dir.display()
            );
            return;
        }
    };
    let mut logs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text =
            std::fs::read_to_string(&log).unwrap_or_else(|error| format!("(unreadable: {error})"));
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        eprintln!("===== {} (last {} lines) =====", log.display(), tail.len());
        for line in tail {
            eprintln!("{line}");
        }
    }
}
