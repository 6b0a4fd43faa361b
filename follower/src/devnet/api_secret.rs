//! The devnet's API-token signing key (`--api-secret-file`): the HS256 secret
//! its JWTs are signed with, kept in a file so tokens outlive a restart and can
//! be minted before the devnet first starts (a Kubernetes Secret holding the
//! key, and another holding a token made from it).
//!
//! Formats read, so a real Lotus node's key works unchanged:
//! - Lotus's keystore entry (`keystore/MF2XI2BNNJ3XILLQOJUXMYLUMU`), a `KeyInfo`
//!   JSON object `{"Type":"jwt-hmac-secret","PrivateKey":"<base64>"}`;
//! - the same JSON hex-encoded, as `lotus-shed jwt new` writes its `.jwts` file;
//! - anything else is the key itself, byte for byte (a trailing newline is part
//!   of it: tokens minted elsewhere must use the same bytes).
//!
//! A missing file is created in Lotus's keystore format with 32 random bytes,
//! mode 0600, written to a temporary file beside it and moved into place only
//! when complete and synced, so a crash never leaves a truncated key behind;
//! the move never replaces a file another process created meanwhile.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::rpc::auth::Auth;

/// The flag and its variable, named in every error so the user knows what to fix.
const FLAG: &str = "--api-secret-file (LOTUS_FOLLOWER_API_SECRET_FILE)";
/// Lotus's key type for its JWT secret (`node/modules/core.go`).
const KEY_TYPE: &str = "jwt-hmac-secret";
/// As Lotus generates it.
const CREATED_KEY_BYTES: usize = 32;

/// How a key file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// Lotus's keystore `KeyInfo` JSON (what this module creates).
    LotusKeyInfo,
    /// `KeyInfo` JSON, hex-encoded (`lotus-shed jwt new`).
    LotusShedHex,
    /// The file's bytes are the key.
    Raw,
}

/// The signing key and where it came from.
pub struct ApiSecret {
    key: Vec<u8>,
    pub format: KeyFormat,
    /// Whether this call created the file.
    pub created: bool,
}

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself: this ends up in logs.
        f.debug_struct("ApiSecret")
            .field("bytes", &self.key.len())
            .field("format", &self.format)
            .field("created", &self.created)
            .finish()
    }
}

impl ApiSecret {
    pub fn auth(&self) -> Auth {
        Auth::new(self.key.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiSecretError {
    #[error("{FLAG} {}: cannot read the key file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{FLAG} {}: the key file is empty; put the JWT signing key in it, or remove it to have one created",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error("{FLAG} {}: not a usable JWT signing key: {reason}", path.display())]
    NotAKey { path: PathBuf, reason: String },
    #[error("{FLAG} {}: cannot create the key file: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{FLAG} {}: cannot generate a key: {reason}", path.display())]
    Random { path: PathBuf, reason: String },
}

/// Lotus's `types.KeyInfo`; Go encodes `[]byte` as standard base64.
#[derive(Serialize, Deserialize)]
struct KeyInfo {
    #[serde(rename = "Type")]
    key_type: String,
    #[serde(rename = "PrivateKey")]
    private_key: String,
}

/// The tokens' signer: from the key file when one is given, otherwise a random
/// key that dies with the process.
pub fn auth(path: Option<&Path>) -> anyhow::Result<Auth> {
    match path {
        None => Ok(Auth::random()?),
        Some(path) => {
            let secret = load_or_create(path)?;
            if secret.created {
                tracing::warn!(path = %path.display(), "API secret created: tokens signed with it stay valid across restarts");
            } else {
                tracing::info!(path = %path.display(), format = ?secret.format, "API secret read");
            }
            Ok(secret.auth())
        }
    }
}

/// Reads the key at `path`, creating it when there is no file.
pub fn load_or_create(path: &Path) -> Result<ApiSecret, ApiSecretError> {
    match std::fs::read(path) {
        Ok(bytes) => read(path, &bytes, false),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(ApiSecretError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read(path: &Path, bytes: &[u8], created: bool) -> Result<ApiSecret, ApiSecretError> {
    let (key, format) = parse(bytes).map_err(|problem| match problem {
        Problem::Empty => ApiSecretError::Empty {
            path: path.to_owned(),
        },
        Problem::NotAKey(reason) => ApiSecretError::NotAKey {
            path: path.to_owned(),
            reason,
        },
    })?;
    Ok(ApiSecret {
        key,
        format,
        created,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Empty,
    NotAKey(String),
}

fn parse(bytes: &[u8]) -> Result<(Vec<u8>, KeyFormat), Problem> {
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    // A JSON object can only be a KeyInfo (random raw bytes never parse as one),
    // so a malformed one is an error rather than silently a raw key.
    if let Ok(serde_json::Value::Object(_)) = serde_json::from_slice(text) {
        return key_info(text).map(|key| (key, KeyFormat::LotusKeyInfo));
    }
    if let Some(json) = decode_hex(text)
        && let Ok(serde_json::Value::Object(_)) = serde_json::from_slice(&json)
    {
        return key_info(&json).map(|key| (key, KeyFormat::LotusShedHex));
    }
    Ok((bytes.to_vec(), KeyFormat::Raw))
}

fn key_info(json: &[u8]) -> Result<Vec<u8>, Problem> {
    let info: KeyInfo = serde_json::from_slice(json).map_err(|error| {
        Problem::NotAKey(format!(
            "a JSON key file must be Lotus's KeyInfo {{\"Type\":\"{KEY_TYPE}\",\"PrivateKey\":\"<base64>\"}}: {error}"
        ))
    })?;
    if info.key_type != KEY_TYPE {
        return Err(Problem::NotAKey(format!(
            "its key type is {:?}, not {KEY_TYPE:?} (a wallet key?)",
            info.key_type
        )));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(info.private_key.trim())
        .map_err(|error| Problem::NotAKey(format!("PrivateKey is not base64: {error}")))?;
    if key.is_empty() {
        return Err(Problem::NotAKey("PrivateKey is empty".into()));
    }
    Ok(key)
}

/// Even-length hex text as bytes; `None` for anything else.
fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    text.chunks_exact(2)
        .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok())
        .collect()
}

fn create(path: &Path) -> Result<ApiSecret, ApiSecretError> {
    let create_error = |source| ApiSecretError::Create {
        path: path.to_owned(),
        source,
    };
    let mut key = vec![0; CREATED_KEY_BYTES];
    getrandom::fill(&mut key).map_err(|error| ApiSecretError::Random {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let contents = serde_json::to_vec(&KeyInfo {
        key_type: KEY_TYPE.into(),
        private_key: base64::engine::general_purpose::STANDARD.encode(&key),
    })
    .map_err(|error| create_error(error.into()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // tempfile creates it 0600 and removes it if anything below fails.
    let mut temporary = tempfile::Builder::new()
        .prefix(".api-secret-")
        .tempfile_in(dir)
        .map_err(create_error)?;
    temporary.write_all(&contents).map_err(create_error)?;
    temporary.as_file().sync_all().map_err(create_error)?;
    match temporary.persist_noclobber(path) {
        Ok(_) => {}
        // Another process created it first: use theirs, or their tokens break.
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return std::fs::read(path)
                .map_err(|source| ApiSecretError::Read {
                    path: path.to_owned(),
                    source,
                })
                .and_then(|bytes| read(path, &bytes, false));
        }
        Err(error) => return Err(create_error(error.error)),
    }
    // The rename is durable only once the directory is synced; a key lost in a
    // crash would invalidate tokens already handed out.
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(create_error)?;
    Ok(ApiSecret {
        key,
        format: KeyFormat::LotusKeyInfo,
        created: true,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::rpc::auth::Perm;

    fn key_info_json(key: &[u8], key_type: &str) -> String {
        serde_json::json!({
            "Type": key_type,
            "PrivateKey": base64::engine::general_purpose::STANDARD.encode(key),
        })
        .to_string()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a token signed with `a` is accepted by `b`.
    fn same_key(a: &ApiSecret, b: &ApiSecret) -> anyhow::Result<bool> {
        let token = a.auth().token(Perm::Admin)?;
        Ok(b.auth().check(Some(&format!("Bearer {token}"))).is_ok())
    }

    #[test]
    fn a_missing_key_file_is_created_private_in_lotus_format_and_kept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("jwt.key");
        let created = load_or_create(&path)?;
        assert!(created.created);
        assert_eq!(created.key.len(), 32);
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by its owner only");
        let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        assert_eq!(
            stored["Type"], "jwt-hmac-secret",
            "Lotus's KeyInfo: {stored}"
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(stored["PrivateKey"].as_str().unwrap_or_default())?,
            created.key
        );
        let entries: Vec<_> = std::fs::read_dir(dir.path())?.collect::<Result<_, _>>()?;
        assert_eq!(entries.len(), 1, "no temporary file left: {entries:?}");

        let again = load_or_create(&path)?;
        assert!(!again.created, "read, not replaced");
        assert_eq!(again.format, KeyFormat::LotusKeyInfo);
        assert!(same_key(&created, &again)?, "tokens survive a restart");
        Ok(())
    }

    #[test]
    fn lotus_keys_and_raw_bytes_are_read() -> anyhow::Result<()> {
        let key = b"\x00\xffa lotus node's jwt secret\n".to_vec();
        let json = key_info_json(&key, "jwt-hmac-secret");
        let cases = [
            (
                json.clone().into_bytes(),
                KeyFormat::LotusKeyInfo,
                key.clone(),
            ),
            (
                format!("{json}\n").into_bytes(),
                KeyFormat::LotusKeyInfo,
                key.clone(),
            ),
            (
                hex(json.as_bytes()).into_bytes(),
                KeyFormat::LotusShedHex,
                key.clone(),
            ),
            (
                format!("{}\n", hex(json.as_bytes())).into_bytes(),
                KeyFormat::LotusShedHex,
                key.clone(),
            ),
            // Byte for byte, the newline included.
            (b"hunter2\n".to_vec(), KeyFormat::Raw, b"hunter2\n".to_vec()),
            (key.clone(), KeyFormat::Raw, key.clone()),
            // Hex that is not a KeyInfo is just text.
            (b"00ff00ff".to_vec(), KeyFormat::Raw, b"00ff00ff".to_vec()),
        ];
        for (contents, format, expected) in cases {
            assert_eq!(
                parse(&contents),
                Ok((expected, format)),
                "{:?}",
                String::from_utf8_lossy(&contents)
            );
        }
        Ok(())
    }

    #[test]
    fn an_empty_unreadable_or_foreign_key_file_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = |name: &str, contents: &[u8]| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)?;
            Ok(path)
        };
        let wallet = key_info_json(&[1; 32], "secp256k1");
        let cases = [
            (file("empty", b"")?, "the key file is empty"),
            (file("blank", b" \n")?, "the key file is empty"),
            (file("wallet", wallet.as_bytes())?, "\"secp256k1\""),
            (
                file(
                    "not-base64",
                    br#"{"Type":"jwt-hmac-secret","PrivateKey":"%%"}"#,
                )?,
                "PrivateKey is not base64",
            ),
            (
                file("no-key", br#"{"Type":"jwt-hmac-secret","PrivateKey":""}"#)?,
                "PrivateKey is empty",
            ),
            (file("other-json", br#"{"secret":"x"}"#)?, "Lotus's KeyInfo"),
            // A directory where the file should be cannot be read.
            (dir.path().to_owned(), "cannot read the key file"),
            // Nor can a file be created in a directory that does not exist.
            (
                dir.path().join("missing/jwt.key"),
                "cannot create the key file",
            ),
        ];
        for (path, expected) in cases {
            let message = match load_or_create(&path) {
                Ok(secret) => anyhow::bail!("{} was accepted: {secret:?}", path.display()),
                Err(error) => error.to_string(),
            };
            println!("{message}");
            assert!(message.contains(expected), "{message}");
            assert!(
                message.contains("--api-secret-file") && message.contains(&*path.to_string_lossy()),
                "names the flag and the path: {message}"
            );
        }
        Ok(())
    }
}
