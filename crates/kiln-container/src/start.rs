//! What every start of a container runs: written once when the container is made, read by
//! `kiln start` and by its runner's restart policy.
//!
//! A container's settings are decided once, when it is made (from the image, its stored
//! `run:` defaults and `kiln run`'s flags): a stopped container started again must be the
//! same container — same rootfs upper dir, same confinement, same limits — even if the
//! image's tag, its defaults or kiln's environment changed since. So the runtime's whole
//! [`ContainerSpec`] is kept as `start.json` next to `state.json`, with the restart
//! policy, the log options and the healthcheck.

use kiln_runtime::ContainerSpec;
use kiln_store::{ContainerDir, Store};
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};
use super::health::HealthConfig;
use super::log::LogOptions;
use super::restart::RestartPolicy;

/// The file in a container's dir that holds its [`StartConfig`].
const START_FILE: &str = "start.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartConfig {
    pub spec: ContainerSpec,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub log: LogOptions,
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// `-p`: ports published with `--network bridge`.
    #[serde(default)]
    pub publish: Vec<kiln_spec::PortMapping>,
    /// Bandwidth limits of its veth on the bridge network.
    #[serde(default)]
    pub rates: kiln_network::Shaping,
    /// Named networks it is on (`--network NAME`, `kiln network connect`); none: the
    /// default network when its mode is bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::named_network::NetworkChoice>,
    /// Every named network was disconnected (`kiln network disconnect`, as docker
    /// allows): it runs with loopback only, not on the default network, until one is
    /// connected again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub networks_disconnected: bool,
}

impl StartConfig {
    pub fn write(&self, store: &Store, dir: &ContainerDir) -> Result<()> {
        let json = serde_json::to_vec(self).expect("a start config serialises");
        dir.write_file(store, START_FILE, &json)?;
        Ok(())
    }

    /// The container's start config; an error names a container made by a kiln that did
    /// not keep one.
    pub fn read(dir: &ContainerDir) -> Result<StartConfig> {
        dir.read_file(START_FILE)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| ContainerError::NoStartConfig(dir.id.clone()))
    }
}
