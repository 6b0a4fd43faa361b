//! The devnet's message pool: messages pushed over RPC wait here until a block
//! includes them, in nonce order per sender.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use fvm_shared::{address::Address, crypto::signature::SignatureType};

use super::keys::{KeyError, verify_secp};
use crate::chain::SignedMessage;

/// Pending messages per sender, by nonce; the next nonce each sender's
/// included messages leave it at.
#[derive(Debug, Default)]
pub struct Mpool {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<Address, BTreeMap<u64, SignedMessage>>,
    /// After the messages of the tipsets produced but not yet executed.
    included_next: HashMap<Address, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("only secp256k1-signed messages can be pushed to the devnet")]
    NotSecp,
    #[error("the signature does not match the sender {0}")]
    BadSignature(String),
    #[error("nonce {nonce} is already used (the next is {next})")]
    NonceUsed { nonce: u64, next: u64 },
    #[error("another message with nonce {0} is already pending")]
    NoncePending(u64),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Mpool {
    /// Adds a message; its sender's `state_nonce` is the nonce in the latest
    /// executed state.
    pub fn push(&self, signed: SignedMessage, state_nonce: u64) -> Result<(), PushError> {
        if signed.signature.sig_type != SignatureType::Secp256k1 {
            return Err(PushError::NotSecp);
        }
        if !verify_secp(&signed)? {
            return Err(PushError::BadSignature(signed.message.from.to_string()));
        }
        let mut inner = self.lock();
        let from = signed.message.from;
        let floor = inner.floor(&from, state_nonce);
        if signed.message.sequence < floor {
            return Err(PushError::NonceUsed {
                nonce: signed.message.sequence,
                next: floor,
            });
        }
        let queue = inner.pending.entry(from).or_default();
        match queue.get(&signed.message.sequence) {
            // Pushing the same message twice is harmless.
            Some(pending) if pending == &signed => Ok(()),
            Some(_) => Err(PushError::NoncePending(signed.message.sequence)),
            None => {
                queue.insert(signed.message.sequence, signed);
                Ok(())
            }
        }
    }

    /// The nonce a new message from `address` should use.
    pub fn next_nonce(&self, address: &Address, state_nonce: u64) -> u64 {
        let inner = self.lock();
        let floor = inner.floor(address, state_nonce);
        inner
            .pending
            .get(address)
            .and_then(|queue| queue.keys().next_back())
            .map_or(floor, |last| floor.max(last + 1))
    }

    /// Removes and returns the messages that can go into the next block: each
    /// sender's run of consecutive nonces from where its state leaves it.
    pub fn take_ready(&self, state_nonce: impl Fn(&Address) -> u64) -> Vec<SignedMessage> {
        let mut inner = self.lock();
        let mut ready = Vec::new();
        let senders: Vec<Address> = inner.pending.keys().copied().collect();
        for sender in senders {
            let mut next = inner.floor(&sender, state_nonce(&sender));
            let Some(queue) = inner.pending.get_mut(&sender) else {
                continue;
            };
            // Nonces the chain has passed can never be included.
            queue.retain(|nonce, _| *nonce >= next);
            while let Some(signed) = queue.remove(&next) {
                ready.push(signed);
                next += 1;
            }
            if queue.is_empty() {
                inner.pending.remove(&sender);
            }
        }
        ready
    }

    /// Records the messages a produced tipset includes (pushed and the
    /// devnet's own): their senders' next nonces until the tipset executes.
    pub fn included(&self, messages: &[SignedMessage]) {
        let mut inner = self.lock();
        for signed in messages {
            let next = inner.included_next.entry(signed.message.from).or_default();
            *next = (*next).max(signed.message.sequence + 1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn floor(&self, address: &Address, state_nonce: u64) -> u64 {
        self.included_next
            .get(address)
            .map_or(state_nonce, |included| state_nonce.max(*included))
    }
}

#[cfg(test)]
mod tests {
    use fvm_shared::econ::TokenAmount;

    use super::*;
    use crate::devnet::keys::Account;

    fn transfer(from: &Account, nonce: u64) -> anyhow::Result<SignedMessage> {
        Ok(from.transfer(Address::new_id(1005), nonce, 1)?)
    }

    #[test]
    fn messages_leave_in_nonce_runs() -> anyhow::Result<()> {
        let pool = Mpool::default();
        let account = Account::derive(1, 0)?;
        pool.push(transfer(&account, 0)?, 0)?;
        pool.push(transfer(&account, 2)?, 0)?;
        assert_eq!(pool.next_nonce(&account.address, 0), 3);
        // The gap at 1 holds 2 back.
        let ready = pool.take_ready(|_| 0);
        assert_eq!(ready.len(), 1);
        pool.included(&ready);
        assert_eq!(pool.next_nonce(&account.address, 0), 3);
        assert!(matches!(
            pool.push(transfer(&account, 0)?, 0),
            Err(PushError::NonceUsed { nonce: 0, next: 1 })
        ));
        pool.push(transfer(&account, 1)?, 0)?;
        let ready = pool.take_ready(|_| 1);
        pool.included(&ready);
        let nonces: Vec<u64> = ready.iter().map(|s| s.message.sequence).collect();
        assert_eq!(nonces, [1, 2]);
        // A forged signature is refused.
        let mut forged = transfer(&account, 3)?;
        forged.message.value = TokenAmount::from_atto(1000);
        assert!(matches!(
            pool.push(forged, 0),
            Err(PushError::BadSignature(_))
        ));
        Ok(())
    }
}
