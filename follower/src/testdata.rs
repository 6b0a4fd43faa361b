//! The shared test data (`../shared/data/`, or `$LOTUS_FOLLOWER_TEST_DATA`).
//! Under CI (`CI=true`) a missing file fails the test; elsewhere the test is
//! skipped with a notice naming the file.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    std::env::var_os("LOTUS_FOLLOWER_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The path of `relative` under the test data, or `None` (with a notice) when it
/// is missing outside CI.
pub fn path(relative: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = dir().join(relative);
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        anyhow::bail!(
            "test data {} is missing (set LOTUS_FOLLOWER_TEST_DATA)",
            path.display()
        );
    }
    eprintln!(
        "skipping: test data {} is missing (set LOTUS_FOLLOWER_TEST_DATA)",
        path.display()
    );
    Ok(None)
}

pub fn read_string(relative: &str) -> anyhow::Result<Option<String>> {
    path(relative)?
        .map(|path| Ok(std::fs::read_to_string(path)?))
        .transpose()
}
