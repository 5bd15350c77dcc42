use std::io;
use std::path::PathBuf;

/// Everything that can go wrong setting up or tearing down a container's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid subnet {subnet}: {why}")]
    InvalidSubnet { subnet: String, why: String },

    #[error("subnet {subnet} overlaps the host's route to {route}")]
    SubnetOverlapsRoute { subnet: String, route: String },

    #[error("network {network} is in use with subnet {in_use}, not {requested}")]
    SubnetInUse {
        network: String,
        in_use: String,
        requested: String,
    },

    #[error("{name} exists and is not a bridge")]
    NotABridge { name: String },

    #[error("no free address left in {subnet}")]
    Exhausted { subnet: String },

    #[error("network state {}: {source}", path.display())]
    State { path: PathBuf, source: io::Error },

    #[error("network state {} is not valid: {source}", path.display())]
    StateCorrupt {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("{what}: {source}")]
    Netlink { what: String, source: io::Error },

    #[error("{tool} is not installed")]
    ToolMissing { tool: String, package: String },

    #[error("nft refused kiln's rules: {stderr}")]
    Nft { stderr: String },

    #[error("invalid {what} {name:?}: letters, digits, '-' and '_', starting with a letter")]
    InvalidName { what: &'static str, name: String },

    #[error("port {port} is already in use{}", if *by_container { " by another container" } else { "" })]
    PortInUse { port: String, by_container: bool },

    #[error("{}: {source}", path.display())]
    Sysctl { path: PathBuf, source: io::Error },

    #[error("pasta {what}: {stderr}")]
    Pasta { what: String, stderr: String },

    #[error("/dev/net/tun cannot be opened for reading and writing: {source}")]
    TunUnavailable { source: io::Error },

    #[error("port {port} cannot be published: {source}")]
    PortUnavailable { port: String, source: io::Error },
}

impl NetworkError {
    /// What the user can do about it, where there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            NetworkError::SubnetOverlapsRoute { .. } => Some(
                "choose a subnet no host route uses for kiln's network (kiln's config file)"
                    .to_owned(),
            ),
            NetworkError::SubnetInUse { .. } => {
                Some("stop the containers on the network first, or keep its subnet".to_owned())
            }
            NetworkError::NotABridge { .. } => Some(
                "kiln does not touch interfaces it did not make: rename that one, or give \
                 kiln's network another bridge name"
                    .to_owned(),
            ),
            NetworkError::Exhausted { .. } => {
                Some("stop some containers, or give the network a larger subnet".to_owned())
            }
            NetworkError::StateCorrupt { path, .. } => Some(format!(
                "with no container running on the network, remove {}",
                path.display()
            )),
            NetworkError::PortInUse { .. } => {
                Some("publish another host port, or stop what uses this one".to_owned())
            }
            NetworkError::TunUnavailable { .. } => Some(
                "a network without root needs /dev/net/tun open to every user, as udev \
                 makes it on Debian: chmod 0666 /dev/net/tun"
                    .to_owned(),
            ),
            NetworkError::PortUnavailable { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some(
                    "ports below 1024 need root: publish a higher host port, or lower \
                     net.ipv4.ip_unprivileged_port_start"
                        .to_owned(),
                )
            }
            NetworkError::ToolMissing { package, .. } => {
                Some(format!("install it: apt-get install {package}"))
            }
            NetworkError::Netlink { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
                Some("bridge networking needs CAP_NET_ADMIN (run kiln as root)".to_owned())
            }
            _ => None,
        }
    }

    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetworkError {
        let what = what.into();
        move |source| NetworkError::Netlink { what, source }
    }
}
