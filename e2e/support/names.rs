//! Unique, valid names for per-test objects, so tests never share state and can
//! run in parallel and again on the same test bed.

/// `<prefix>-<8 hex digits>`, lower-case, with anything but `[a-z0-9]` in the
/// prefix turned into `separator` (`-` for Kubernetes names, `_` for CQL ones).
pub(crate) fn unique(prefix: &str, separator: char) -> String {
    let prefix: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => separator,
        })
        .take(40)
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{separator}{}", &id[..8])
}

#[cfg(test)]
mod tests {
    use super::unique;

    #[test]
    fn names_are_valid_and_distinct() {
        let a = unique("Deployment_Pods.Ready", '-');
        let b = unique("Deployment_Pods.Ready", '-');
        assert_ne!(a, b);
        assert!(a.starts_with("deployment-pods-ready-"), "{a}");
        assert!(a.len() <= 63);
        assert!(unique("round trip", '_').starts_with("round_trip_"));
    }
}
