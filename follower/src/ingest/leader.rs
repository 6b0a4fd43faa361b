//! The leader as the ingester sees it: a Lotus JSON-RPC endpoint over HTTP.
//! Blocks are read raw (`ChainReadObj`, in batches) and checked against their
//! CIDs, so what lands in the store is byte for byte what the chain holds.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use cid::Cid;
use serde_json::{Value, json};

use crate::chain::{
    TipSetKey, cbor,
    json::{CidJson, cids_from_json},
};

/// Calls per JSON-RPC batch when reading blocks.
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("leader {url} answered {method} with an error: {message}")]
    Rpc {
        url: String,
        method: String,
        message: String,
    },
    #[error("leader {url} answered {method} with something unexpected: {reason}")]
    Malformed {
        url: String,
        method: String,
        reason: String,
    },
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
}

#[derive(Debug, Clone)]
pub struct Leader {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Leader {
    /// `url` is the leader's `/rpc/v1` endpoint; `token` a JWT for it.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build(),
        );
        Self {
            url: url.to_owned(),
            token,
            agent,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn post(&self, body: &Value) -> Result<Value, LeaderError> {
        let unreachable = |reason: String| LeaderError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request
            .send(body.to_string().as_bytes())
            .map_err(|error| unreachable(error.to_string()))?;
        let status = response.status();
        let text = response
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|error| unreachable(error.to_string()))?;
        serde_json::from_str(&text).map_err(|_| {
            unreachable(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }

    fn result(&self, method: &str, answer: Value) -> Result<Value, LeaderError> {
        if let Some(error) = answer.get("error") {
            return Err(LeaderError::Rpc {
                url: self.url.clone(),
                method: method.to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    fn malformed(&self, method: &str, reason: impl ToString) -> LeaderError {
        LeaderError::Malformed {
            url: self.url.clone(),
            method: method.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, LeaderError> {
        let answer =
            self.post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))?;
        self.result(method, answer)
    }

    /// The leader's head tipset key.
    pub fn head(&self) -> Result<TipSetKey, LeaderError> {
        let head = self.call("Filecoin.ChainHead", json!([]))?;
        let cids = serde_json::from_value::<Vec<CidJson>>(head["Cids"].clone())
            .map_err(|error| self.malformed("ChainHead", error))?;
        Ok(TipSetKey(cids_from_json(&cids)))
    }

    /// The raw blocks, in order, each checked against its CID.
    pub fn read_objs(&self, cids: &[Cid]) -> Result<Vec<Vec<u8>>, LeaderError> {
        let mut blocks = Vec::with_capacity(cids.len());
        for chunk in cids.chunks(BATCH) {
            let batch: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(id, cid)| {
                    json!({"jsonrpc": "2.0", "id": id, "method": "Filecoin.ChainReadObj",
                           "params": [{"/": cid.to_string()}]})
                })
                .collect();
            let answers = self.post(&Value::Array(batch))?;
            let mut answers = answers
                .as_array()
                .cloned()
                .ok_or_else(|| self.malformed("ChainReadObj", "not a batch answer"))?;
            answers.sort_by_key(|answer| answer["id"].as_u64().unwrap_or(u64::MAX));
            if answers.len() != chunk.len() {
                return Err(self.malformed("ChainReadObj", "answers missing from the batch"));
            }
            for (cid, answer) in chunk.iter().zip(answers) {
                let encoded = self.result("ChainReadObj", answer)?;
                let bytes = STANDARD
                    .decode(encoded.as_str().unwrap_or_default())
                    .map_err(|error| self.malformed("ChainReadObj", error))?;
                cbor::verify(cid, &bytes)?;
                blocks.push(bytes);
            }
        }
        Ok(blocks)
    }
}
