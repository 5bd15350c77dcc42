//! Why a container could not be made: one typed variant per reason, so the command line
//! can decide its exit code and add what only it knows (which flag a value came from).
//!
//! Messages name values, never flags: a mount, a user or a tmpfs target may come from the
//! image's stored `run:` settings as well as from the command line.

use std::path::PathBuf;

use kiln_image::ImageError;
use kiln_layer::LayerError;
use kiln_runtime::seccomp::SeccompError;
use kiln_runtime::RuntimeError;
use kiln_spec::values::ValueError;
use kiln_store::StoreError;

use super::confine::{ConfineError, DeviceProblem};
use super::passwd::UserError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// The `run:` settings kept with a tag do not parse: the container must not start
    /// without the limits and dropped capabilities they may hold.
    #[error("{reference}: {source}")]
    RunDefaults {
        reference: String,
        source: ImageError,
        /// Another tag of the same image whose settings are intact, to retag from.
        intact: Option<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer blob of an image could not become its layer dir.
    #[error("{layer}: {source}")]
    Unpack {
        layer: Box<kiln_image::incoming::Described>,
        source: LayerError,
    },
    /// A setting's value (hostname, user, capability name) is not valid.
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("no command: the image has no entrypoint or cmd")]
    NoCommand,
    /// Capabilities, limits or throttled devices that cannot make a confinement.
    #[error(transparent)]
    Confinement(#[from] ConfineError),
    #[error("unsupported security option {0:?}")]
    SecurityOption(String),
    #[error("seccomp profile {}: {source}", path.display())]
    SeccompProfileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp profile {} is not a regular file", .0.display())]
    SeccompProfileNotAFile(PathBuf),
    /// A seccomp profile that reads but does not compile.
    #[error("seccomp profile: {0}")]
    SeccompProfile(SeccompError),
    #[error("invalid volume {0:?}")]
    BadVolume(String),
    #[error("bind mount source {} does not exist", .0.display())]
    BindSourceMissing(PathBuf),
    #[error("tmpfs {0}: the target must be an absolute path")]
    TmpfsTarget(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("the name {0:?} is already in use by a container")]
    NameInUse(String),
    #[error("{} is not empty", .0.display())]
    BundleNotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    BundleDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing a bundle's rootfs or `config.json`.
    #[error(transparent)]
    BundleIo(std::io::Error),
    #[error(transparent)]
    BundleConfig(serde_json::Error),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("invalid log option {0:?}")]
    LogOption(String),
    #[error("container log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Talking to the process that runs a container.
    #[error("{what}: {source}")]
    Control {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the container's monitor did not answer in time")]
    MonitorTimeout,
    #[error("the container's monitor refused: {0}")]
    MonitorRefused(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} was started by a kiln without exec support (it has no exec.json)")]
    NoExecContext(String),
    #[error("container {0} was made by a kiln that did not keep its start settings (it has no start.json)")]
    NoStartConfig(String),
    #[error("container {0} is restarting")]
    Restarting(String),
    /// Connecting a container to its network.
    #[error("{0}")]
    Network(String),
    #[error(transparent)]
    NamedNetwork(#[from] crate::named_network::NamedNetworkError),
    #[error(transparent)]
    Device(#[from] kiln_runtime::DeviceError),
    /// `--network-rate-in/-out` or `network_rate_in/out` for a container without its own
    /// veth to shape.
    #[error(
        "a network rate limit needs the container's own network: the bridge, not host or none"
    )]
    NetworkRateWithoutBridge,
    /// A `net.*` sysctl for a container that shares the host's network.
    #[error("sysctl {0} cannot be set with the host's network: it would change the host's")]
    SysctlWithHostNetwork(String),
    /// A device for a container of an ordinary user's kiln, which cannot make device
    /// nodes or allow them in a cgroup.
    #[error("devices need root: an ordinary user's kiln cannot make device nodes in a container")]
    DevicesNeedRoot,
    #[error(transparent)]
    Ulimit(#[from] kiln_runtime::RlimitError),
}

impl ContainerError {
    /// A hint for the user, printed under the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            ContainerError::NoSuchImage(_) => {
                Some("`kiln images` lists the images in the store; `kiln build` makes one".into())
            }
            ContainerError::RunDefaults {
                reference, intact, ..
            } => {
                let retag = match intact {
                    Some(good) => format!(
                        "or retag it from a name with intact settings: kiln tag {good} {reference}"
                    ),
                    None => format!(
                        "or retag it from an image whose settings are intact: kiln tag GOOD {reference}"
                    ),
                };
                Some(format!(
                    "rebuild it with kiln build, which stores the spec's run: settings again, {retag}"
                ))
            }
            ContainerError::SecurityOption(_) => Some(
                "kiln knows seccomp=unconfined, seccomp=PROFILE.json (Docker's format) and \
                 no-new-privileges[=true|false]"
                    .into(),
            ),
            ContainerError::SeccompProfileUnreadable { .. } => {
                Some("give the path of a JSON profile in Docker's format".into())
            }
            ContainerError::BadVolume(_) => Some(
                "write SRC:DST or SRC:DST:ro, with DST an absolute path in the container".into(),
            ),
            ContainerError::BindSourceMissing(_) => {
                Some("create it first, or fix the path before the ':'".into())
            }
            ContainerError::User(_) => {
                Some("users and groups come from the image's /etc/passwd and /etc/group".into())
            }
            ContainerError::BundleNotEmpty(_) => Some("give a new or empty directory".into()),
            ContainerError::Confinement(ConfineError::Limits(conflict)) => {
                Some(conflict.describe(str::to_owned).1)
            }
            ContainerError::Confinement(ConfineError::Device { problem, .. }) => match problem {
                DeviceProblem::Unreadable(_) => None,
                _ => Some(
                    "name a block device of this machine, e.g. /dev/sda (lsblk lists them)".into(),
                ),
            },
            ContainerError::NoExecContext(_) => {
                Some("stop it and start a new container from its image".into())
            }
            ContainerError::NoStartConfig(_) => Some(
                "remove it with kiln rm and start a new one from its image with kiln run".into(),
            ),
            ContainerError::Restarting(name) => Some(format!(
                "its restart policy starts it again shortly; kiln stop {name} ends the restarts"
            )),
            ContainerError::Device(kiln_runtime::DeviceError::ReservedTarget { .. }) => {
                Some("give another path in the container: HOST:/dev/NAME".into())
            }
            ContainerError::Device(kiln_runtime::DeviceError::Twice { .. }) => {
                Some("give each device its own path in the container".into())
            }
            ContainerError::Device(_) => Some(
                "give the path of a device node on this host (ls -l /dev), or a directory of them"
                    .into(),
            ),
            ContainerError::SysctlWithHostNetwork(_) => Some(
                "drop the sysctl, or run the container with its own network (--network none)"
                    .into(),
            ),
            ContainerError::NetworkRateWithoutBridge => {
                Some("run it with --network bridge, or drop the rate limit".into())
            }
            ContainerError::NamedNetwork(e) => e.hint(),
            ContainerError::LogOption(_) => Some(
                "kiln knows max-size=SIZE (e.g. 10m; at least 1 byte) and max-file=N (N ≥ 1)"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
