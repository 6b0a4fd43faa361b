//! Lotus's API tokens: HS256 JWTs whose `Allow` claim lists permissions
//! (`read`, `write`, `sign`, `admin`). A server with a secret checks them; a
//! request without a token may read.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do, in Lotus's order: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    Read,
    Write,
    Sign,
    Admin,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Sign => "sign",
            Perm::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Perm> {
        [Perm::Read, Perm::Write, Perm::Sign, Perm::Admin]
            .into_iter()
            .find(|perm| perm.name() == name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "Allow")]
    allow: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid API token: {0}")]
    Invalid(String),
    #[error("cannot generate a secret: {0}")]
    Random(String),
}

/// The secret tokens are signed with.
#[derive(Clone)]
pub struct Auth {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

impl Auth {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    /// A fresh random secret: tokens issued before a restart stop working.
    pub fn random() -> Result<Self, AuthError> {
        let mut secret = vec![0; 32];
        getrandom::fill(&mut secret).map_err(|error| AuthError::Random(error.to_string()))?;
        Ok(Self::new(secret))
    }

    /// A token allowing `perm` and everything below it.
    pub fn token(&self, perm: Perm) -> Result<String, AuthError> {
        let allow = [Perm::Read, Perm::Write, Perm::Sign, Perm::Admin]
            .into_iter()
            .filter(|p| *p <= perm)
            .map(|p| p.name().to_owned())
            .collect();
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { allow },
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|error| AuthError::Invalid(error.to_string()))
    }

    /// The permissions an `Authorization` header grants: read without one.
    /// As in Lotus, a method needs its permission listed in the token.
    pub fn check(&self, header: Option<&str>) -> Result<Allowed, AuthError> {
        let Some(header) = header else {
            return Ok(Allowed(vec![Perm::Read]));
        };
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| AuthError::Invalid("expected `Bearer <token>`".into()))?;
        // Lotus's tokens carry no expiry.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(
            token.trim(),
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map_err(|error| AuthError::Invalid(error.to_string()))?
        .claims;
        Ok(Allowed(
            claims
                .allow
                .iter()
                .filter_map(|name| Perm::parse(name))
                .collect(),
        ))
    }
}

/// What a caller's token lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed(Vec<Perm>);

impl Allowed {
    /// Everything: where no tokens are checked.
    pub fn all() -> Self {
        Self(vec![Perm::Read, Perm::Write, Perm::Sign, Perm::Admin])
    }

    pub fn allows(&self, perm: Perm) -> bool {
        self.0.contains(&perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_they_list() -> anyhow::Result<()> {
        let auth = Auth::random()?;
        let admin = auth.check(Some(&format!("Bearer {}", auth.token(Perm::Admin)?)))?;
        assert!(admin.allows(Perm::Read) && admin.allows(Perm::Write) && admin.allows(Perm::Admin));
        let read = auth.check(Some(&format!("Bearer {}", auth.token(Perm::Read)?)))?;
        assert!(read.allows(Perm::Read) && !read.allows(Perm::Write));
        assert_eq!(auth.check(None)?, Allowed(vec![Perm::Read]));
        let other = Auth::random()?.token(Perm::Admin)?;
        assert!(auth.check(Some(&format!("Bearer {other}"))).is_err());
        assert!(auth.check(Some("Basic abc")).is_err());
        Ok(())
    }
}
