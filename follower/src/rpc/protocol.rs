//! JSON-RPC 2.0 as Lotus speaks it: positional params, batches, Lotus's error
//! codes, and the checks that run before a request reaches a method.

use serde_json::{Value, json, value::RawValue};

/// Lotus's code for an error a method returned (go-jsonrpc's default).
pub const METHOD_ERROR: i64 = 1;
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A request over a configured limit (body, batch, depth, lookback, subscriptions).
pub const LIMIT_EXCEEDED: i64 = -32005;
/// A call that did not finish within `--request-timeout`.
pub const TIMEOUT: i64 = -32006;
/// The store could not be read (unreachable, timing out): an outage, never
/// an answer about the chain. Clients may retry.
pub const STORE_UNAVAILABLE: i64 = -32007;

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub fn method(message: impl std::fmt::Display) -> Self {
        Self::new(METHOD_ERROR, message.to_string())
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(LIMIT_EXCEEDED, message)
    }
}

/// One call: `id` is `None` for a notification (no response is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    pub params: Vec<Value>,
}

/// Validates one request object. On failure, the id to answer with (null when
/// it could not be read) and the error.
pub fn parse_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "a request must be a JSON object"),
        ));
    };
    let id = object.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if !matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    ) {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "id must be a number, a string or null"),
        ));
    }
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            reply_id,
            RpcError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\""),
        ));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err((
            reply_id,
            RpcError::new(INVALID_REQUEST, "method must be a string"),
        ));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params,
        Some(_) => {
            return Err((
                reply_id,
                RpcError::invalid_params("params must be an array (Lotus takes positional params)"),
            ));
        }
    };
    Ok(Request { id, method, params })
}

#[derive(serde::Serialize)]
struct Success<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a RawValue,
}

/// A success response around an already serialized result (cached results are
/// stored serialized, so a cache hit costs a copy, not a serialization).
pub fn success(id: &Value, result: &RawValue) -> String {
    serde_json::to_string(&Success {
        jsonrpc: "2.0",
        id,
        result,
    })
    .unwrap_or_default()
}

pub fn failure(id: &Value, error: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})
        .to_string()
}

/// Whether `body` nests arrays and objects deeper than `max`, checked on the
/// bytes before parsing so a hostile body cannot exhaust the parser's stack.
pub fn too_deep(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Ethereum-style names are aliases of Lotus methods: normalised before any
/// table or allowlist sees them.
pub fn normalize_method(method: &str) -> String {
    match method {
        "net_version" => "Filecoin.NetVersion".into(),
        "net_listening" => "Filecoin.NetListening".into(),
        "web3_clientVersion" => "Filecoin.Web3ClientVersion".into(),
        _ => match method.strip_prefix("eth_") {
            Some(rest) => {
                let mut name = String::from("Filecoin.Eth");
                let mut upper = true;
                for c in rest.chars() {
                    if c == '_' {
                        upper = true;
                    } else if upper {
                        name.extend(c.to_uppercase());
                        upper = false;
                    } else {
                        name.push(c);
                    }
                }
                name
            }
            None => method.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_malformed_ones() {
        let ok = parse_request(json!({"jsonrpc": "2.0", "id": 7, "method": "Filecoin.ChainHead"}));
        assert_eq!(
            ok,
            Ok(Request {
                id: Some(json!(7)),
                method: "Filecoin.ChainHead".into(),
                params: vec![]
            })
        );
        let cases = [
            json!([1]),
            json!({"jsonrpc": "1.0", "id": 1, "method": "x"}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": 1}}),
        ];
        for case in cases {
            assert!(parse_request(case.clone()).is_err(), "{case}");
        }
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(!too_deep(br#"{"a":[[1]]}"#, 3));
        assert!(too_deep(br#"{"a":[[[1]]]}"#, 3));
        assert!(!too_deep(br#"{"a":"[[[[[[\"[[["}"#, 2));
    }

    #[test]
    fn ethereum_aliases_normalise() {
        assert_eq!(
            normalize_method("eth_blockNumber"),
            "Filecoin.EthBlockNumber"
        );
        assert_eq!(normalize_method("eth_chainId"), "Filecoin.EthChainId");
        assert_eq!(
            normalize_method("eth_get_balance"),
            "Filecoin.EthGetBalance"
        );
        assert_eq!(normalize_method("net_version"), "Filecoin.NetVersion");
        assert_eq!(
            normalize_method("web3_clientVersion"),
            "Filecoin.Web3ClientVersion"
        );
        assert_eq!(normalize_method("Filecoin.ChainHead"), "Filecoin.ChainHead");
    }
}
