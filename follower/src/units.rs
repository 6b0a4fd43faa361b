//! Sizes and durations on the command line. Sizes are Kubernetes quantities
//! (`1.5Gi`, `512Mi`, `2Ti`, `1e9`, `100M`): the operator passes a spec's
//! `cacheSize` through unchanged-in-meaning, so the follower must accept every
//! quantity the API server accepts. Durations are humantime's (`200ms`, `4s`,
//! `2m`, `1h 30m`). One parser of each for the workspace: the operator uses
//! the same quantity crate.

use std::time::Duration;

use kube_quantity::ParsedQuantity;

/// A Kubernetes quantity in bytes, rounded up to a whole byte as the kubelet
/// does. Also accepts the `KiB`/`MiB`/`GiB`/`TiB` spellings this flag took
/// before it took quantities (`512MiB` is `512Mi`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let quantity_text = match text.strip_suffix("iB") {
        Some(prefix) if prefix.ends_with(['K', 'M', 'G', 'T', 'P', 'E']) => {
            format!("{prefix}i")
        }
        _ => text.to_owned(),
    };
    let quantity = ParsedQuantity::try_from(quantity_text.as_str()).map_err(|error| {
        format!(
            "invalid size {text:?} (a Kubernetes quantity such as 512Mi, 1.5Gi or 1e9): {error}"
        )
    })?;
    let bytes = quantity
        .to_bytes_f64()
        .ok_or_else(|| format!("size {text:?} is out of range"))?
        .ceil();
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!(
            "size {text:?} must be a non-negative number of bytes"
        ));
    }
    // f64 holds integers exactly up to 2^53 (8 PiB); larger sizes are not
    // meaningful for a cache or a request limit.
    if bytes > (1u64 << 53) as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// [`parse_bytes`] for limits held as `usize`.
pub fn parse_bytes_usize(text: &str) -> Result<usize, String> {
    usize::try_from(parse_bytes(text)?).map_err(|_| format!("size {text:?} is too large"))
}

/// A positive duration: `200ms`, `4s`, `2m`, `1h 30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|error| format!("invalid duration {text:?} (e.g. 200ms, 30s, 2m): {error}"))?,
    };
    if duration.is_zero() {
        return Err(format!("duration {text:?} must be positive"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_bytes, parse_duration};

    #[test]
    fn sizes_are_kubernetes_quantities() {
        // What crash-looped pods: `followers.cacheSize` takes any quantity.
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("2Ti"), Ok(2 << 40));
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("100M"), Ok(100_000_000));
        assert_eq!(parse_bytes("2k"), Ok(2_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        // Milli-bytes round up, as the kubelet rounds memory.
        assert_eq!(parse_bytes("1500m"), Ok(2));
        // The spellings the flag took before.
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-1Gi").is_err());
        assert!(parse_bytes("99999999999Ei").is_err());
    }

    #[test]
    fn durations_take_units_below_a_second() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("4"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
