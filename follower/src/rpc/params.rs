//! Decoding positional params into the chain model, with errors that say which
//! param is wrong and why.

use cid::Cid;
use fvm_shared::address::Address;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::protocol::RpcError;
use crate::chain::{TipSetKey, json::CidJson, network::parse_address};

/// The params a method was given, checked for count first.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    values: &'a [Value],
}

impl<'a> Params<'a> {
    /// Between `min` and `max` params; trailing ones may be omitted down to `min`.
    pub fn new(values: &'a [Value], min: usize, max: usize) -> Result<Self, RpcError> {
        if values.len() < min || values.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(RpcError::invalid_params(format!(
                "expected {expected} params, got {}",
                values.len()
            )));
        }
        Ok(Self { values })
    }

    fn get(&self, index: usize) -> &Value {
        self.values.get(index).unwrap_or(&Value::Null)
    }

    pub fn decode<T: DeserializeOwned>(&self, index: usize, what: &str) -> Result<T, RpcError> {
        serde_json::from_value(self.get(index).clone())
            .map_err(|error| RpcError::invalid_params(format!("param {index} ({what}): {error}")))
    }

    pub fn cid(&self, index: usize) -> Result<Cid, RpcError> {
        Ok(self.decode::<CidJson>(index, "a CID as {\"/\": \"…\"}")?.0)
    }

    /// A tipset key: an array of CIDs; `null` or `[]` names the head.
    pub fn tipset_key(&self, index: usize) -> Result<TipSetKey, RpcError> {
        let cids =
            self.decode::<Option<Vec<CidJson>>>(index, "a tipset key (array of CIDs, or null)")?;
        Ok(TipSetKey(
            cids.unwrap_or_default()
                .into_iter()
                .map(|cid| cid.0)
                .collect(),
        ))
    }

    pub fn address(&self, index: usize) -> Result<Address, RpcError> {
        let text = self.decode::<String>(index, "an address")?;
        parse_address(&text)
            .map_err(|error| RpcError::invalid_params(format!("param {index}: {error}")))
    }

    /// A chain epoch: a non-negative integer.
    pub fn height(&self, index: usize) -> Result<i64, RpcError> {
        let height = self.decode::<i64>(index, "a height")?;
        if height < 0 {
            return Err(RpcError::invalid_params(format!(
                "param {index}: height {height} is negative"
            )));
        }
        Ok(height)
    }
}
