//! Synthetic chain data for unit tests, written with the same crates that read
//! it: state trees of any version, message lists, headers.

use cid::Cid;
use fvm_ipld_amt::Amtv0;
use fvm_ipld_blockstore::{Blockstore, MemoryBlockstore};
use fvm_ipld_hamt::{BytesKey, Hamt, Hamtv0};
use fvm_shared::{
    ActorID,
    address::Address,
    bigint::BigInt,
    econ::TokenAmount,
    state::{StateInfo0, StateRoot, StateTreeVersion},
};
use serde::Serialize;

use super::{
    BlockHeader, TxMeta,
    block::Ticket,
    cbor::{self, identity_cid},
    message::{Message, SignedMessage},
    state::{AccountState, ActorStateV4, HAMT_BIT_WIDTH, INIT_ACTOR_ID, InitState},
};

pub fn put<T: Serialize>(store: &MemoryBlockstore, value: &T) -> anyhow::Result<Cid> {
    let (cid, bytes) = cbor::encode_block(value)?;
    store.put_keyed(&cid, &bytes)?;
    Ok(cid)
}

/// A state tree of `version` in that version's formats: the init actor mapping
/// each robust address to its ID, and an account actor per `(robust, id, nonce)`
/// whose balance is its ID in attoFIL. From version 5 accounts get an f4 address.
pub fn synthetic_state(
    store: &MemoryBlockstore,
    version: StateTreeVersion,
    accounts: &[(Address, ActorID, u64)],
) -> anyhow::Result<Cid> {
    let legacy = matches!(version, StateTreeVersion::V0 | StateTreeVersion::V1);
    let entries = accounts
        .iter()
        .map(|(robust, id, _)| (BytesKey(robust.to_bytes()), *id));
    let address_map = if legacy {
        let mut map = Hamtv0::<_, ActorID>::new_with_bit_width(store, HAMT_BIT_WIDTH);
        for (key, id) in entries {
            map.set(key, id)?;
        }
        map.flush()?
    } else {
        let mut map = Hamt::<_, ActorID>::new_with_bit_width(store, HAMT_BIT_WIDTH);
        for (key, id) in entries {
            map.set(key, id)?;
        }
        map.flush()?
    };
    let init = InitState {
        address_map,
        next_id: 1000,
        network_name: "synthetic".into(),
    };
    let mut actors = vec![(
        INIT_ACTOR_ID,
        identity_cid(0x55, b"fil/1/init")?,
        put(store, &init)?,
        0,
        None,
    )];
    for (robust, id, nonce) in accounts {
        let state = put(store, &AccountState { address: *robust })?;
        let delegated = (version == StateTreeVersion::V5)
            .then(|| Address::new_delegated(10, &id.to_be_bytes()))
            .transpose()?;
        actors.push((
            *id,
            identity_cid(0x55, b"fil/1/account")?,
            state,
            *nonce,
            delegated,
        ));
    }
    let key = |id: ActorID| BytesKey(Address::new_id(id).to_bytes());
    let v4 = |code, state, nonce, id: ActorID| ActorStateV4 {
        code,
        state,
        nonce,
        balance: TokenAmount::from_atto(id),
    };
    let actors_root = match version {
        StateTreeVersion::V0 | StateTreeVersion::V1 => {
            let mut tree = Hamtv0::<_, ActorStateV4>::new_with_bit_width(store, HAMT_BIT_WIDTH);
            for (id, code, state, nonce, _) in actors {
                tree.set(key(id), v4(code, state, nonce, id))?;
            }
            tree.flush()?
        }
        StateTreeVersion::V5 => {
            let mut tree =
                Hamt::<_, fvm_shared::state::ActorState>::new_with_bit_width(store, HAMT_BIT_WIDTH);
            for (id, code, state, nonce, delegated) in actors {
                let actor = fvm_shared::state::ActorState::new(
                    code,
                    state,
                    TokenAmount::from_atto(id),
                    nonce,
                    delegated,
                );
                tree.set(key(id), actor)?;
            }
            tree.flush()?
        }
        _ => {
            let mut tree = Hamt::<_, ActorStateV4>::new_with_bit_width(store, HAMT_BIT_WIDTH);
            for (id, code, state, nonce, _) in actors {
                tree.set(key(id), v4(code, state, nonce, id))?;
            }
            tree.flush()?
        }
    };
    if version == StateTreeVersion::V0 {
        return Ok(actors_root);
    }
    let info = put(store, &StateInfo0::default())?;
    put(
        store,
        &StateRoot {
            version,
            actors: actors_root,
            info,
        },
    )
}

/// A message list (TxMeta) of BLS and signed secp messages.
pub fn tx_meta(
    store: &MemoryBlockstore,
    bls: &[Message],
    secp: &[SignedMessage],
) -> anyhow::Result<Cid> {
    let mut bls_cids = Vec::new();
    for message in bls {
        bls_cids.push(put(store, message)?);
    }
    let mut secp_cids = Vec::new();
    for signed in secp {
        secp_cids.push(put(store, signed)?);
    }
    let meta = TxMeta {
        bls_messages: Amtv0::new_from_iter(store, bls_cids)?,
        secp_messages: Amtv0::new_from_iter(store, secp_cids)?,
    };
    put(store, &meta)
}

/// A block header at `height` with this ticket, parent state and messages.
pub fn header(
    ticket: &[u8],
    height: i64,
    parents: Vec<Cid>,
    state: Cid,
    messages: Cid,
) -> anyhow::Result<BlockHeader> {
    Ok(BlockHeader {
        miner: Address::new_id(1000),
        ticket: Some(Ticket {
            vrf_proof: ticket.to_vec(),
        }),
        election_proof: None,
        beacon_entries: Vec::new(),
        win_post_proof: Vec::new(),
        parents,
        parent_weight: BigInt::from(height),
        height,
        parent_state_root: state,
        parent_message_receipts: state,
        messages,
        bls_aggregate: None,
        timestamp: 1_600_000_000 + height as u64 * 30,
        block_sig: None,
        fork_signaling: 0,
        parent_base_fee: TokenAmount::from_atto(100),
    })
}
