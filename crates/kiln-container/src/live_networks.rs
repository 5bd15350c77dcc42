//! `kiln network connect` and `disconnect`: the named networks a container is on,
//! changed while it runs or while it is stopped, as docker allows both.
//!
//! A running container's leases are held by its runner (a foreground `kiln run` or its
//! monitor), the process that lives exactly as long as the container: so the runner
//! keeps one [`LiveNetworks`] for the container's whole life and makes the changes
//! itself, asked over the control socket. At each run's start it plans the networks from
//! the current start config and attaches them, at each end releases them; a connect or
//! disconnect in between adds or removes an interface of the running namespace
//! (`eth1`, … routing only its subnet), rewrites `networks.json` (what `inspect` shows)
//! and `start.json` (so a restart or `kiln start` keeps the change). A stopped
//! container's change is its `start.json` only.

use kiln_network::Attachment;
use kiln_runtime::NetworkMode;
use kiln_store::{ContainerDir, Store};

use super::container_networks::{self, Joined, DEFAULT_NETWORK};
use super::error::ContainerError;
use super::named_network::{self, NamedNetworkError, NetworkChoice};
use super::network::NetworkRecord;
use super::start::StartConfig;

/// Why a connect or disconnect was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{container} is already on network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("{container} is not on network {network}")]
    NotConnected { container: String, network: String },
    #[error("{0} is on the default bridge network")]
    OnDefaultNetwork(String),
    #[error("the default bridge network is not connected or disconnected")]
    DefaultNetwork,
    #[error("{0} runs with the host's network or none: it cannot join a bridge network")]
    NotBridge(String),
    #[error(transparent)]
    Named(#[from] NamedNetworkError),
    /// Making or removing the interface failed.
    #[error("{0}")]
    Interface(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl ConnectError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConnectError::AlreadyConnected { container, .. }
            | ConnectError::NotConnected { container, .. } => Some(format!(
                "kiln inspect {container} lists its networks (NetworkSettings.Networks)"
            )),
            ConnectError::OnDefaultNetwork(_) | ConnectError::DefaultNetwork => Some(
                "kiln connects named networks only: run the container with --network NAME".into(),
            ),
            ConnectError::NotBridge(_) => {
                Some("run it with --network NAME to put it on named networks".into())
            }
            ConnectError::Named(e) => e.hint(),
            ConnectError::Container(e) => e.hint(),
            ConnectError::Interface(_) => None,
        }
    }
}

type Result<T, E = ConnectError> = std::result::Result<T, E>;

/// The networks of one container as its runner (or, stopped, `kiln network`) holds them.
pub struct LiveNetworks {
    store: Store,
    dir: ContainerDir,
    /// The container's name (DNS answers it, errors name it).
    name: String,
    start: StartConfig,
    /// This run's networks and, while it runs, their attachments (same order).
    joined: Vec<Joined>,
    attachments: Vec<Attachment>,
    /// An ordinary user's default network: pasta, started for each run.
    on_pasta: bool,
    pasta: Option<crate::rootless_network::PastaNetwork>,
}

impl LiveNetworks {
    pub fn new(store: &Store, dir: &ContainerDir, name: &str, start: StartConfig) -> Self {
        LiveNetworks {
            store: store.clone(),
            dir: dir.clone(),
            name: name.to_owned(),
            start,
            joined: Vec::new(),
            attachments: Vec::new(),
            on_pasta: false,
            pasta: None,
        }
    }

    /// Decides this run's networks from the start config as it is now (connects and
    /// disconnects of earlier runs included).
    pub fn plan(&mut self) -> Result<(), ContainerError> {
        self.on_pasta = self.start.spec.process.network == NetworkMode::Bridge
            && crate::rootless_network::uses_pasta();
        if self.on_pasta && !self.start.networks.is_empty() {
            return Err(ContainerError::Network(
                "named networks need root: an ordinary user's containers have the default network (pasta), host or none".into(),
            ));
        }
        // Shaping is a qdisc on the bridge's veth; pasta has none: refused, never dropped.
        if self.on_pasta && self.start.rates != kiln_network::Shaping::default() {
            return Err(ContainerError::Network(
                "bandwidth limits need root: they shape the veth of kiln's bridge, which an ordinary user's kiln does not make".into(),
            ));
        }
        self.joined = match self.on_pasta {
            true => Vec::new(),
            false => {
                container_networks::networks_of(&self.store, &self.start, &self.dir, &self.name)?
            }
        };
        Ok(())
    }

    /// This run's networks.
    pub fn joined(&self) -> &[Joined] {
        &self.joined
    }

    /// Attaches the planned networks to the namespace of `pid`, the just cloned first
    /// process.
    pub fn attach(&mut self, pid: i32) -> std::result::Result<(), String> {
        if self.on_pasta {
            let ports =
                crate::network::host_ports(&self.start.publish).map_err(|e| e.to_string())?;
            self.pasta = Some(crate::rootless_network::attach_pasta(
                pid,
                &ports,
                &self.dir.path,
            )?);
            return Ok(());
        }
        self.attachments = container_networks::attach_all(&self.joined, &self.dir.id, pid)?;
        Ok(())
    }

    /// Whether the run got any network.
    pub fn attached(&self) -> bool {
        !self.attachments.is_empty()
    }

    /// Writes `networks.json`: the networks the container is on now.
    pub fn write_records(&self) -> Result<(), ContainerError> {
        let records = container_networks::records(&self.joined, &self.attachments);
        NetworkRecord::write_all(&records, &self.store, &self.dir)
    }

    /// Releases every attachment of a run whose namespace has ended: what is left to the
    /// runner ([`container_networks::RunEnd`]).
    pub fn release(&mut self) -> container_networks::RunEnd {
        if let Some(pasta) = self.pasta.take() {
            pasta.stop();
        }
        let attachments = std::mem::take(&mut self.attachments);
        container_networks::release_all(&self.joined, attachments)
    }

    /// Puts the container on the named network `network` with `aliases`: while it runs
    /// (`pid`: its first process) as the next free `ethN`, routing only that subnet.
    /// Returns the network joined now, whose DNS responder must run.
    pub fn connect(
        &mut self,
        pid: Option<i32>,
        network: &str,
        aliases: &[String],
    ) -> Result<Option<Joined>> {
        if network == DEFAULT_NETWORK {
            return Err(ConnectError::DefaultNetwork);
        }
        if self.start.spec.process.network != NetworkMode::Bridge {
            return Err(ConnectError::NotBridge(self.name.clone()));
        }
        let definition = named_network::find(&self.store, network)?;
        if self
            .start
            .networks
            .iter()
            .any(|n| n.name == definition.name)
        {
            return Err(ConnectError::AlreadyConnected {
                container: self.name.clone(),
                network: definition.name,
            });
        }
        if self.start.networks.is_empty() && !self.start.networks_disconnected {
            // A container is on named networks or on the default one, as its
            // resolv.conf is made for one of them.
            return Err(ConnectError::OnDefaultNetwork(self.name.clone()));
        }
        let choice = NetworkChoice {
            name: definition.name,
            aliases: aliases.to_vec(),
        };
        let joined = match pid {
            Some(pid) => Some(self.attach_now(pid, &choice)?),
            None => None,
        };
        self.start.networks.push(choice);
        self.start.networks_disconnected = false;
        if let Err(e) = self.start.write(&self.store, &self.dir) {
            self.start.networks.pop();
            if joined.is_some() {
                let _ = self.detach_now(self.joined.len() - 1);
            }
            return Err(e.into());
        }
        Ok(joined)
    }

    /// Adds an interface for `choice` to the namespace of `pid`, and its record.
    fn attach_now(&mut self, pid: i32, choice: &NetworkChoice) -> Result<Joined> {
        let index = self.next_free_index();
        let joined =
            container_networks::named_joined(&self.store, &self.dir, &self.name, choice, index)?;
        let netns = kiln_network::netns::NetNs::of_pid(pid as u32).map_err(|e| {
            ConnectError::Interface(format!("open the container's network namespace: {e}"))
        })?;
        let attachment = container_networks::attach_one(&joined, &self.dir.id, &netns)
            .map_err(ConnectError::Interface)?;
        self.joined.push(joined.clone());
        self.attachments.push(attachment);
        self.write_records()?;
        Ok(joined)
    }

    /// The lowest `N` no interface `ethN` of this run has (one disconnected earlier is
    /// free again).
    fn next_free_index(&self) -> usize {
        (0..)
            .find(|n| {
                let name = format!("eth{n}");
                !self.joined.iter().any(|j| j.endpoint.inside.ifname == name)
            })
            .expect("a free index")
    }

    /// Takes the container off `network`: while it runs, its interface is removed (the
    /// namespace lives on) and its lease released. Returns the network's label when it
    /// has no container left (to be removed a little later, as at a run's end).
    pub fn disconnect(&mut self, network: &str) -> Result<Option<String>> {
        if network == DEFAULT_NETWORK {
            return Err(ConnectError::DefaultNetwork);
        }
        // A network removed after a stopped container left it can still be left.
        let name = match named_network::find(&self.store, network) {
            Ok(definition) => definition.name,
            Err(NamedNetworkError::NotFound(_))
                if self.start.networks.iter().any(|n| n.name == network) =>
            {
                network.to_owned()
            }
            Err(e) => return Err(e.into()),
        };
        let Some(position) = self.start.networks.iter().position(|n| n.name == name) else {
            return Err(ConnectError::NotConnected {
                container: self.name.clone(),
                network: name,
            });
        };
        let running = self.joined.iter().position(|j| j.label == name);
        let detached = match running {
            Some(index) if index < self.attachments.len() => self.detach_now(index),
            _ => Ok(None),
        };
        self.start.networks.remove(position);
        // Docker lets every network go: the container then has loopback only.
        self.start.networks_disconnected = self.start.networks.is_empty();
        self.start.write(&self.store, &self.dir)?;
        detached
    }

    /// Removes this run's interface `index` and its record.
    fn detach_now(&mut self, index: usize) -> Result<Option<String>> {
        let joined = self.joined.remove(index);
        let attachment = self.attachments.remove(index);
        self.write_records()?;
        match joined.network.detach_keeping_network(attachment) {
            Ok(true) => Ok(Some(joined.label)),
            Ok(false) => Ok(None),
            Err(e) => Err(ConnectError::Interface(format!(
                "network {}: {e}",
                joined.label
            ))),
        }
    }
}
