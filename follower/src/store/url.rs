//! `--store` values: `embedded:<dir>` or `cql://<host>:<port>[,…]/<keyspace>`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    Result, Store, StoreError,
    cql::{CqlOptions, CqlStore},
    embedded::EmbeddedStore,
};

/// How to log in to a CQL store (`--cql-username`, `--cql-password-file`):
/// the ingester's role writes, a follower's may only SELECT.
#[derive(Debug, Clone, Default)]
pub struct CqlLogin {
    pub username: Option<String>,
    /// A file holding the password (a mounted Secret), never the password itself.
    pub password_file: Option<PathBuf>,
    pub request_timeout: Option<Duration>,
    pub local_dc: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    /// Reported node address → the address to connect to instead.
    pub address_map: Vec<(SocketAddr, SocketAddr)>,
}

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
    pub fn open(&self, login: &CqlLogin) -> Result<Box<dyn Store>> {
        match self {
            StoreUrl::Embedded(dir) => Ok(Box::new(EmbeddedStore::open(dir)?)),
            StoreUrl::Cql {
                contact_points,
                keyspace,
            } => {
                let password = login
                    .password_file
                    .as_ref()
                    .map(|path| {
                        std::fs::read_to_string(path)
                            .map(|text| text.trim().to_owned())
                            .map_err(|error| {
                                StoreError::Backend(format!(
                                    "cannot read the CQL password from {}: {error}",
                                    path.display()
                                ))
                            })
                    })
                    .transpose()?;
                Ok(Box::new(CqlStore::connect(&CqlOptions {
                    contact_points: contact_points.clone(),
                    keyspace: keyspace.clone(),
                    username: login.username.clone(),
                    password,
                    request_timeout: login.request_timeout.unwrap_or(Duration::from_secs(10)),
                    local_dc: login.local_dc.clone(),
                    address_map: login.address_map.clone(),
                    tls_ca_file: login.tls_ca_file.clone(),
                })?))
            }
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
