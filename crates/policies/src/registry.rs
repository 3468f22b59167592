//! The policy registry: one name → constructor map; the name is the CLI and config key.

use crate::gavel::{Gavel, GavelConfig};
use crate::pollux::Pollux;
use crate::themis::Themis;
use crate::{
    fifo::Fifo, proportional::Proportional, srtf::Srtf, tiresias::Tiresias,
    tiresias::TiresiasConfig,
};
use adaptsched_core::Policy;

/// Every registered policy name, in the order `--help` lists them.
pub const POLICY_NAMES: &[&str] = &[
    "adaptive",
    "fifo",
    "srtf",
    "tiresias",
    "tiresias-paper",
    "proportional",
    "pollux",
    "sia",
    "gavel",
    "gavel-throughput",
    "themis",
];

/// The policy `adaptsched serve` and `simulate` use when none is named.
pub const DEFAULT_POLICY: &str = "adaptive";

/// A policy name that is not in the registry, or settings it does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownPolicy {
    #[error("unknown policy {name:?} (known: {})", POLICY_NAMES.join(", "))]
    Name { name: String },
    #[error("policy {name:?}: {reason}")]
    Settings { name: String, reason: String },
}

/// Builds a fresh policy by registry name.
pub fn build_policy(name: &str) -> Result<Box<dyn Policy>, UnknownPolicy> {
    if let Some(overrides) = name.strip_prefix("adaptive:") {
        let config = crate::adaptive::AdaptiveConfig::default()
            .with_overrides(overrides)
            .map_err(|reason| UnknownPolicy::Settings {
                name: name.to_string(),
                reason,
            })?;
        return Ok(Box::new(crate::adaptive::Adaptive::new(config)));
    }
    Ok(match name {
        "adaptive" => Box::new(crate::adaptive::Adaptive::default()),
        "fifo" => Box::new(Fifo),
        "srtf" => Box::new(Srtf),
        "tiresias" => Box::new(Tiresias::new("tiresias", TiresiasConfig::default())),
        "tiresias-paper" => Box::new(Tiresias::new("tiresias-paper", TiresiasConfig::paper())),
        "proportional" => Box::new(Proportional),
        "pollux" => Box::new(Pollux::default()),
        "sia" => Box::new(crate::sia::Sia::default()),
        "gavel" => Box::new(Gavel::new("gavel", GavelConfig::las())),
        "gavel-throughput" => Box::new(Gavel::new(
            "gavel-throughput",
            GavelConfig::max_sum_throughput(),
        )),
        "themis" => Box::new(Themis::default()),
        other => {
            return Err(UnknownPolicy::Name {
                name: other.to_string(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_builds_and_reports_its_name() {
        for name in POLICY_NAMES {
            assert_eq!(build_policy(name).expect(name).name(), *name);
        }
    }

    #[test]
    fn bad_names_and_settings_say_what_is_wrong() {
        let unknown = build_policy("polux").err().expect("unknown").to_string();
        assert!(
            unknown.contains("\"polux\"") && unknown.contains("pollux"),
            "{unknown}"
        );
        let setting = build_policy("adaptive:p=1/fast=1")
            .err()
            .expect("bad")
            .to_string();
        assert!(setting.contains("\"fast\""), "{setting}");
        assert!(build_policy("adaptive:p=-1/min_grant=2").is_ok());
    }
}
