//! The Filecoin chain model: Lotus's types with their CBOR encodings (through the
//! Filecoin project's crates) and their Lotus JSON forms.

pub mod block;
pub mod builtin;
pub mod cbor;
pub mod json;
pub mod message;
pub mod network;
pub mod selection;
pub mod state;
pub mod tipset;
pub mod upgrades;

#[cfg(test)]
pub(crate) mod test_support;

pub use block::BlockHeader;
pub use message::{Message, MessageReceipt, SignedMessage, TxMeta};
pub use network::Network;
pub use state::{ActorState, StateTree};
pub use tipset::{TipSet, TipSetKey};
