//! The agent's configuration: a TOML file (every key documented in
//! `systemd/agent.toml`), overridden by command-line flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default data directory when neither the file nor a flag names one.
pub const DATA_DIR_DEFAULT: &str = "/var/lib/shardnode";

/// Number and size of the file-backed devices made on a first run.
pub const DEFAULT_DEVICE_COUNT: usize = 3;
pub const DEFAULT_DEVICE_SIZE_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the agent keeps its own files (and its default devices).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Block devices or files to serve. Empty: three default files in
    /// `data_dir`, created and formatted on the first run.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// Size of each default file-backed device.
    #[serde(default = "default_device_size")]
    pub default_device_size_bytes: u64,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DATA_DIR_DEFAULT)
}

fn default_device_size() -> u64 {
    DEFAULT_DEVICE_SIZE_BYTES
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            devices: Vec::new(),
            default_device_size_bytes: DEFAULT_DEVICE_SIZE_BYTES,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../systemd/agent.toml");
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/shardnode"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<Config>("data_dirr = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("data_dirr"), "{err}");
    }
}
