//! The image config document (`application/vnd.oci.image.config.v1+json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use kiln_spec as spec;

/// An image config. Field names follow the OCI image spec; `extra` keeps fields kiln does
/// not model so a base image's config survives a rebuild unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: RuntimeConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The part of the config a runtime uses (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `""` (what docker and buildah write for "not set") reads as `None`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_is_none"
    )]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// `""` reads as `None`, as for `user`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An optional string where docker's Go structs write `""` for "not set".
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.filter(|t| !t.is_empty()))
}

/// `{}` in Go-map-as-set fields such as `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's healthcheck, honoured by docker and podman.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers; one that breaks kiln's grammar makes the config
    /// unreadable, since each names a layer dir.
    pub diff_ids: Vec<kiln_store::Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// The config of an empty image for this machine's platform.
    pub fn scratch() -> Self {
        ImageConfig {
            architecture: go_arch().into(),
            os: "linux".into(),
            rootfs: RootFs::default(),
            ..Default::default()
        }
    }

    /// The store's layer dir names of this image, top-most first (overlay's lowerdir
    /// order).
    pub fn lower_layer_names(&self) -> Vec<String> {
        self.rootfs
            .diff_ids
            .iter()
            .rev()
            .map(kiln_store::Store::layer_name)
            .collect()
    }

    /// Looks up a variable in `config.Env`.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.config
            .env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

impl RuntimeConfig {
    /// Sets `name=value` in `Env`, replacing an earlier value and keeping its position.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        let prefix = format!("{name}=");
        match self.env.iter_mut().find(|kv| kv.starts_with(&prefix)) {
            Some(kv) => *kv = entry,
            None => self.env.push(entry),
        }
    }

    /// Applies a spec's `config:` section: every key given there wins over the base image.
    pub fn apply_spec(&mut self, c: &spec::Config) {
        for (k, v) in &c.env {
            self.set_env(k, v);
        }
        if let Some(ep) = &c.entrypoint {
            self.entrypoint = Some(ep.clone());
            // Docker semantics: a new entrypoint resets the base image's cmd.
            if c.cmd.is_none() {
                self.cmd = None;
            }
        }
        if let Some(cmd) = &c.cmd {
            self.cmd = Some(cmd.clone());
        }
        if let Some(u) = &c.user {
            self.user = Some(u.clone());
        }
        if let Some(w) = &c.workdir {
            self.working_dir = Some(w.clone());
        }
        for port in &c.expose {
            self.exposed_ports.insert(port.clone(), Empty {});
        }
        for (k, v) in &c.labels {
            self.labels.insert(k.clone(), v.clone());
        }
        for v in &c.volumes {
            self.volumes.insert(v.clone(), Empty {});
        }
        if let Some(s) = &c.stop_signal {
            self.stop_signal = Some(s.clone());
        }
        if let Some(h) = &c.healthcheck {
            self.healthcheck = Some(Healthcheck {
                test: h.test.clone(),
                interval: h.interval_ns,
                timeout: h.timeout_ns,
                start_period: h.start_period_ns,
                retries: h.retries,
            });
        }
    }
}

/// The Go name of this machine's architecture, as OCI configs spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
pub const MAX_EPOCH: u64 = 253_402_300_799;

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`), the form
/// `created` fields use; times past [`MAX_EPOCH`] are written as that.
pub fn rfc3339(epoch: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.min(MAX_EPOCH));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"architecture":"amd64","os":"linux","os.features":["x"],
            "config":{"Env":["A=1"],"ArgsEscaped":true,"Healthcheck":{"Test":["NONE"]}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg: ImageConfig = serde_json::from_str(json).unwrap();
        let back = serde_json::to_value(&cfg).unwrap();
        assert_eq!(back["os.features"][0], "x");
        assert_eq!(back["config"]["ArgsEscaped"], true);
        assert_eq!(back["config"]["Healthcheck"]["Test"][0], "NONE");
    }

    #[test]
    fn dockers_empty_strings_mean_not_set() {
        let json = r#"{"architecture":"amd64","os":"linux",
            "config":{"User":"","WorkingDir":"","Cmd":["sh"]},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.config.user, None);
        assert_eq!(cfg.config.working_dir, None);
        let set = r#"{"User":"app","WorkingDir":"/srv"}"#;
        let runtime: RuntimeConfig = serde_json::from_str(set).unwrap();
        assert_eq!(runtime.user.as_deref(), Some("app"));
        assert_eq!(runtime.working_dir.as_deref(), Some("/srv"));
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = RuntimeConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        };
        c.set_env("PATH", "/usr/bin");
        c.set_env("B", "2");
        assert_eq!(c.env, ["PATH=/usr/bin", "A=1", "B=2"]);
    }
}
