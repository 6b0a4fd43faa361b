//! Filecoin networks: the address prefix and chain ID each one uses.
//!
//! Addresses are printed per network without touching `fvm_shared`'s
//! process-wide network setting, so one process (or one test binary) can serve
//! several networks at once.

use std::{fmt, str::FromStr};

use fvm_shared::address::{Address, Network as AddressNetwork};

use super::upgrades::Schedule;

/// A network the follower can serve (DESIGN.md, "Networks").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Mainnet,
    Calibnet,
    Devnet,
}

impl Network {
    pub const ALL: [Network; 3] = [Network::Mainnet, Network::Calibnet, Network::Devnet];

    pub fn name(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Calibnet => "calibnet",
            Network::Devnet => "devnet",
        }
    }

    /// The EIP-155 chain ID (`EthChainId`, `NetVersion`).
    pub fn chain_id(self) -> u64 {
        match self {
            Network::Mainnet => 314,
            Network::Calibnet => 314_159,
            Network::Devnet => 31_415_926,
        }
    }

    /// Seconds between epochs.
    pub fn block_delay_secs(self) -> u64 {
        30
    }

    /// The least power a miner needs to win blocks, in bytes (Lotus's
    /// `ConsensusMinerMinPower`): 10 TiB on mainnet, 32 GiB on calibnet, 2 KiB
    /// on the devnet as on Lotus's 2k devnets.
    pub fn consensus_miner_min_power(self) -> u64 {
        match self {
            Network::Mainnet => 10 << 40,
            Network::Calibnet => 32 << 30,
            Network::Devnet => 2 << 10,
        }
    }

    /// Epochs between a sector's pre-commit and its seal randomness.
    pub fn pre_commit_challenge_delay(self) -> i64 {
        match self {
            Network::Mainnet | Network::Calibnet => 150,
            Network::Devnet => 10,
        }
    }

    /// The Hyperdrive upgrade (network version 13), from which a tipset's message
    /// selection compares senders by ID address once any sender is one.
    pub fn hyperdrive_height(self) -> i64 {
        Schedule::of(self).height("Hyperdrive").unwrap_or(i64::MIN)
    }

    /// `f` on mainnet, `t` everywhere else.
    pub fn address_prefix(self) -> char {
        match self {
            Network::Mainnet => 'f',
            Network::Calibnet | Network::Devnet => 't',
        }
    }

    /// The address as this network prints it. The checksum covers protocol and
    /// payload only, so the prefix is all that differs between networks.
    pub fn format_address(self, address: &Address) -> String {
        let text = address.to_string();
        let mut formatted = String::with_capacity(text.len());
        formatted.push(self.address_prefix());
        formatted.push_str(text.get(1..).unwrap_or_default());
        formatted
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown network {0:?} (expected one of mainnet, calibnet, devnet)")]
pub struct UnknownNetwork(String);

impl FromStr for Network {
    type Err = UnknownNetwork;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Network::ALL
            .into_iter()
            .find(|network| network.name() == name)
            .ok_or_else(|| UnknownNetwork(name.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid address {text:?}: {reason}")]
pub struct InvalidAddress {
    text: String,
    reason: String,
}

/// Parses an address with either prefix, as Lotus does whatever its network.
pub fn parse_address(text: &str) -> Result<Address, InvalidAddress> {
    let network = match text.chars().next() {
        Some('f') => AddressNetwork::Mainnet,
        Some('t') => AddressNetwork::Testnet,
        _ => {
            return Err(InvalidAddress {
                text: text.to_owned(),
                reason: "an address starts with f or t".into(),
            });
        }
    };
    network.parse_address(text).map_err(|error| InvalidAddress {
        text: text.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_network_prefix_and_parses_both() -> anyhow::Result<()> {
        let address = parse_address("t01001")?;
        assert_eq!(Network::Mainnet.format_address(&address), "f01001");
        assert_eq!(Network::Calibnet.format_address(&address), "t01001");
        assert_eq!(parse_address("f01001")?, address);
        let robust = parse_address("f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q")?;
        assert_eq!(
            Network::Devnet.format_address(&robust),
            "t1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6q"
        );
        assert!(parse_address("x01001").is_err());
        assert!(parse_address("f1ojyfm5btrqq63zquewexr4hecynvq6yjyk5xv6r").is_err());
        Ok(())
    }

    #[test]
    fn network_names_round_trip() {
        for network in Network::ALL {
            assert_eq!(network.name().parse::<Network>().ok(), Some(network));
        }
        assert!("no-such-network".parse::<Network>().is_err());
    }
}
