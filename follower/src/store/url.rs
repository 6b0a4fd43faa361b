//! `--store` values: `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.

use std::path::PathBuf;

use super::{Result, Store, StoreError, embedded::EmbeddedStore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Embedded(PathBuf),
    Cql {
        contact_points: Vec<String>,
        keyspace: String,
    },
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = url.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err(
                    "embedded: needs a directory, as in embedded:/var/lib/lotus-follower".into(),
                );
            }
            return Ok(StoreUrl::Embedded(PathBuf::from(dir)));
        }
        if let Some(rest) = url.strip_prefix("cql://") {
            let (hosts, keyspace) = rest.split_once('/').ok_or_else(|| {
                format!("{url}: expected cql://<host>:<port>[,<host>:<port>…]/<keyspace>")
            })?;
            let contact_points: Vec<String> = hosts.split(',').map(str::to_owned).collect();
            if keyspace.is_empty() || contact_points.iter().any(|point| !point.contains(':')) {
                return Err(format!(
                    "{url}: expected cql://<host>:<port>[,<host>:<port>…]/<keyspace>"
                ));
            }
            return Ok(StoreUrl::Cql {
                contact_points,
                keyspace: keyspace.to_owned(),
            });
        }
        Err(format!(
            "{url}: a store is embedded:<dir> or cql://<host>:<port>[,…]/<keyspace>"
        ))
    }
}

impl StoreUrl {
    pub fn open(&self) -> Result<Box<dyn Store>> {
        match self {
            StoreUrl::Embedded(dir) => Ok(Box::new(EmbeddedStore::open(dir)?)),
            StoreUrl::Cql { .. } => Err(StoreError::Backend(
                "the CQL backend is not built yet (it lands with the ingester); use embedded:<dir>"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        assert_eq!(
            "embedded:/tmp/x".parse(),
            Ok(StoreUrl::Embedded("/tmp/x".into()))
        );
        assert_eq!(
            "cql://a:9042,b:9042/lotus".parse(),
            Ok(StoreUrl::Cql {
                contact_points: vec!["a:9042".into(), "b:9042".into()],
                keyspace: "lotus".into()
            })
        );
        for bad in [
            "embedded:",
            "cql://a:9042",
            "cql://a/ks",
            "postgres://x",
            "",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
    }
}
