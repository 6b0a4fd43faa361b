//! The follower's library: the chain model, the store, import, and the queries
//! the RPC methods need. `main.rs` is the command line over it.

pub mod chain;
pub mod cli;
pub mod devnet;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod rpc;
pub mod serve;
pub mod store;
pub mod tls;
pub mod units;

/// Test support shared with the end-to-end tests: the shared data, Lotus's
/// OpenRPC documents, a JSON-RPC client.
#[doc(hidden)]
pub mod testdata;
