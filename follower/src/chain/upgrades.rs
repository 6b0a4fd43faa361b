//! Network upgrades: the height of each, and the network version a height runs
//! under (`StateNetworkVersion`, `StateGetNetworkParams`).
//!
//! Heights are those of Lotus's build parameters (`build/buildconstants`) for
//! mainnet and calibnet. An upgrade not yet scheduled by the Lotus release these
//! come from carries that release's "not scheduled" height; an operator sets the
//! real one with `--upgrade-height FireHorse=<height>` once it is announced, with
//! no new build. Negative heights are upgrades a network never ran (it started
//! past them), as in Lotus.

use std::{fmt, str::FromStr};

use serde_json::{Map, Value};

use super::Network;

/// One upgrade: its Lotus name, the network version from the epoch after it
/// (`None` when it changes no version), and its height per network.
struct Upgrade {
    name: &'static str,
    version: Option<u32>,
    mainnet: i64,
    calibnet: i64,
}

/// Lotus's "not scheduled yet" heights, which differ per network.
const MAINNET_UNSCHEDULED: i64 = 9_999_999_999;
const CALIBNET_UNSCHEDULED: i64 = 999_999_999_999_999;

const fn upgrade(name: &'static str, version: Option<u32>, mainnet: i64, calibnet: i64) -> Upgrade {
    Upgrade {
        name,
        version,
        mainnet,
        calibnet,
    }
}

/// In mainnet's height order (calibnet ran a few in another order, which
/// `version_at` sorts out), which is also Lotus's `ForkUpgradeParams` order
/// apart from the first few (written in Lotus's field order below).
const UPGRADES: &[Upgrade] = &[
    upgrade("Breeze", Some(1), 41_280, -1),
    upgrade("Smoke", Some(2), 51_000, -2),
    upgrade("Ignition", Some(3), 94_000, -3),
    upgrade("Refuel", Some(3), 130_800, -4),
    upgrade("Assembly", Some(4), 138_720, 30),
    upgrade("Tape", Some(5), 140_760, 60),
    upgrade("Liftoff", Some(5), 148_888, -5),
    upgrade("Kumquat", Some(6), 170_000, 90),
    upgrade("Calico", Some(7), 265_200, 120),
    // Calico + 60 hours on mainnet, + 1 hour on calibnet.
    upgrade("Persian", Some(8), 272_400, 240),
    upgrade("Orange", Some(9), 336_458, 300),
    upgrade("Claus", None, 343_200, 270),
    upgrade("Trust", Some(10), 550_321, 330),
    upgrade("Norwegian", Some(11), 665_280, 360),
    upgrade("Turbo", Some(12), 712_320, 390),
    upgrade("Hyperdrive", Some(13), 892_800, 420),
    upgrade("Chocolate", Some(14), 1_231_620, 450),
    upgrade("OhSnap", Some(15), 1_594_680, 480),
    upgrade("Skyr", Some(16), 1_960_320, 510),
    upgrade("Shark", Some(17), 2_383_680, 16_800),
    upgrade("Hygge", Some(18), 2_683_348, 322_354),
    upgrade("Lightning", Some(19), 2_809_800, 489_094),
    // Lightning + 21 days on mainnet, + 3120 epochs on calibnet.
    upgrade("Thunder", Some(20), 2_870_280, 492_214),
    upgrade("Watermelon", Some(21), 3_469_380, 1_013_134),
    upgrade("Dragon", Some(22), 3_855_360, 1_427_974),
    // Dragon + 120: the switch to drand quicknet.
    upgrade("Phoenix", None, 3_855_480, 1_428_094),
    upgrade("Waffle", Some(23), 4_154_640, 1_779_094),
    upgrade("Tuktuk", Some(24), 4_461_240, 2_078_794),
    upgrade("Teep", Some(25), 4_878_840, 2_523_454),
    // Teep + 90 days on mainnet, + 7 days on calibnet.
    upgrade("Tock", Some(26), 5_138_040, 2_543_614),
    upgrade("GoldenWeek", Some(27), 5_348_280, 3_007_294),
    upgrade(
        "FireHorse",
        Some(28),
        MAINNET_UNSCHEDULED,
        CALIBNET_UNSCHEDULED,
    ),
    upgrade("Xx", Some(29), MAINNET_UNSCHEDULED, CALIBNET_UNSCHEDULED),
];

/// The devnet starts with every upgrade up to FireHorse behind it.
const DEVNET_GENESIS_VERSION: u32 = 28;

/// A network's upgrade heights, with any operator overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    genesis_version: u32,
    /// Height of each entry of `UPGRADES`, same index.
    heights: Vec<i64>,
}

impl Schedule {
    pub fn of(network: Network) -> Schedule {
        let heights = UPGRADES
            .iter()
            .enumerate()
            .map(|(index, upgrade)| match network {
                Network::Mainnet => upgrade.mainnet,
                Network::Calibnet => upgrade.calibnet,
                Network::Devnet if upgrade.version.unwrap_or(0) <= DEVNET_GENESIS_VERSION => {
                    -1 - index as i64
                }
                Network::Devnet => MAINNET_UNSCHEDULED,
            })
            .collect();
        let genesis_version = match network {
            Network::Devnet => DEVNET_GENESIS_VERSION,
            Network::Mainnet | Network::Calibnet => 0,
        };
        Schedule {
            genesis_version,
            heights,
        }
    }

    /// Sets one upgrade's height (`--upgrade-height Name=Height`).
    pub fn set(&mut self, change: &UpgradeHeight) -> Result<(), UnknownUpgrade> {
        let index = UPGRADES
            .iter()
            .position(|upgrade| upgrade.name.eq_ignore_ascii_case(&change.name))
            .ok_or_else(|| UnknownUpgrade(change.name.clone()))?;
        self.heights[index] = change.height;
        Ok(())
    }

    /// The network version at `height`, by Lotus's rule: an upgrade at height
    /// H runs at the end of epoch H, so H still has the old version. Upgrades at
    /// negative heights are behind the network's genesis.
    pub fn version_at(&self, height: i64) -> u32 {
        let mut upgrades: Vec<(i64, u32)> = UPGRADES
            .iter()
            .zip(&self.heights)
            .filter_map(|(upgrade, &at)| Some((at, upgrade.version?)))
            .filter(|&(at, _)| at >= 0)
            .collect();
        upgrades.sort_by_key(|&(at, _)| at);
        upgrades
            .into_iter()
            .take_while(|&(at, _)| at < height)
            .fold(self.genesis_version, |current, (_, version)| {
                current.max(version)
            })
    }

    /// The height of the upgrade Lotus calls `name`.
    pub fn height(&self, name: &str) -> Option<i64> {
        UPGRADES
            .iter()
            .position(|upgrade| upgrade.name == name)
            .map(|index| self.heights[index])
    }

    /// Lotus's `ForkUpgradeParams` object.
    pub fn fork_upgrade_params(&self, network: Network) -> Value {
        let mut params = Map::new();
        for name in [
            "Smoke", "Breeze", "Ignition", "Liftoff", "Assembly", "Refuel", "Tape", "Kumquat",
        ] {
            params.insert(format!("Upgrade{name}Height"), self.height(name).into());
        }
        let tamping = match network {
            Network::Mainnet | Network::Calibnet => 120,
            Network::Devnet => 0,
        };
        params.insert("BreezeGasTampingDuration".into(), tamping.into());
        for (upgrade, &at) in UPGRADES.iter().zip(&self.heights) {
            params
                .entry(format!("Upgrade{}Height", upgrade.name))
                .or_insert(at.into());
        }
        Value::Object(params)
    }
}

/// `Name=Height`, as `--upgrade-height` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeHeight {
    pub name: String,
    pub height: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("expected Name=Height (e.g. FireHorse=5500000), got {0:?}")]
pub struct BadUpgradeHeight(String);

impl FromStr for UpgradeHeight {
    type Err = BadUpgradeHeight;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadUpgradeHeight(text.to_owned());
        let (name, height) = text.split_once('=').ok_or_else(bad)?;
        Ok(UpgradeHeight {
            name: name.trim().to_owned(),
            height: height.trim().parse().map_err(|_| bad())?,
        })
    }
}

pub struct UnknownUpgrade(String);

impl fmt::Debug for UnknownUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for UnknownUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = UPGRADES.iter().map(|upgrade| upgrade.name).collect();
        write!(
            f,
            "unknown upgrade {:?} (known: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownUpgrade {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainnet_versions_change_the_epoch_after_each_upgrade() {
        let schedule = Schedule::of(Network::Mainnet);
        for (height, version) in [
            (0, 0),
            (41_280, 0),
            (41_281, 1),
            (130_801, 3),
            (148_889, 5),
            (343_201, 9),
            (892_800, 12),
            (892_801, 13),
            (3_855_481, 22),
            (4_461_241, 24),
            (5_138_041, 26),
            (5_348_281, 27),
            (9_000_000_000, 27),
        ] {
            assert_eq!(schedule.version_at(height), version, "height {height}");
        }
    }

    #[test]
    fn calibnet_skips_the_upgrades_it_never_ran() {
        let schedule = Schedule::of(Network::Calibnet);
        assert_eq!(schedule.version_at(30), 0);
        assert_eq!(schedule.version_at(31), 4);
        assert_eq!(schedule.version_at(241), 8);
        assert_eq!(schedule.version_at(2_543_615), 26);
        assert_eq!(schedule.version_at(3_007_295), 27);
    }

    #[test]
    fn an_override_schedules_an_upgrade() -> anyhow::Result<()> {
        let mut schedule = Schedule::of(Network::Mainnet);
        schedule.set(&"firehorse=6000000".parse()?)?;
        assert_eq!(schedule.version_at(6_000_000), 27);
        assert_eq!(schedule.version_at(6_000_001), 28);
        let params = schedule.fork_upgrade_params(Network::Mainnet);
        assert_eq!(params["UpgradeFireHorseHeight"], 6_000_000);
        assert!(schedule.set(&"Nope=1".parse()?).is_err());
        assert!("FireHorse".parse::<UpgradeHeight>().is_err());
        assert!("FireHorse=soon".parse::<UpgradeHeight>().is_err());
        Ok(())
    }

    #[test]
    fn devnet_runs_the_newest_scheduled_version_from_genesis() {
        let schedule = Schedule::of(Network::Devnet);
        assert_eq!(schedule.version_at(0), DEVNET_GENESIS_VERSION);
        assert_eq!(schedule.version_at(1_000_000), DEVNET_GENESIS_VERSION);
        let params = schedule.fork_upgrade_params(Network::Devnet);
        assert_eq!(params["UpgradeGoldenWeekHeight"], -31);
        assert_eq!(params["UpgradeXxHeight"], MAINNET_UNSCHEDULED);
    }

    #[test]
    fn fork_params_have_lotus_keys_in_lotus_order() {
        let params = Schedule::of(Network::Calibnet).fork_upgrade_params(Network::Calibnet);
        let keys: Vec<&String> = params
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 34);
        assert_eq!(keys[0], "UpgradeSmokeHeight");
        assert_eq!(keys[8], "BreezeGasTampingDuration");
        assert_eq!(keys[9], "UpgradeCalicoHeight");
        assert_eq!(keys[33], "UpgradeXxHeight");
        assert_eq!(params["UpgradeLiftoffHeight"], -5);
    }
}
