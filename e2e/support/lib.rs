//! Support for the end-to-end tests, which run against the test bed that
//! `e2e/testbed up` starts: where its components are ([`TestBed::from_env`]), a
//! fresh namespace, keyspace or role per test, waiting for a condition with a
//! timeout instead of sleeping, and the components' logs when a test fails.
//!
//! A test that cannot reach a component fails with a message saying how to start
//! the test bed; nothing here ever skips.

mod audit;
mod backing;
mod cluster;
mod commands;
mod completeness;
mod cql;
mod devnet;
mod env;
mod fleet;
mod host;
mod logs;
mod names;
mod operator;
mod process;
mod proxy;
mod wait;

pub use audit::AuditedRequest;
pub use backing::{Backing, RealNode};
pub use cluster::{TestNamespace, install_crd};
pub use commands::{Ran, repo_root};
pub use completeness::holes;
pub use cql::{TestKeyspace, TestRole};
pub use devnet::DevnetLeader;
pub use env::{TestBed, TestBedError};
pub use fleet::{condition, install_crds, publish_head, service_monitor_crd, wait_for_phase};
pub use host::{PortForward, curl, rpc};
pub use operator::{OPERATOR, TestOperator, install_operator_rbac, metric_sum, shipped_rbac};
pub use process::{FollowerProcess, free_address, http_get};
pub use proxy::TcpProxy;
pub use wait::{Check, WaitTimeout, wait_until};
