//! The runner's side of `kiln network connect` and `disconnect` of a running container:
//! `kiln_container::live_networks` changes the container's networks, and this adds what
//! only the command line does — starting a network's DNS responder and having a network
//! left idle removed later, both by running kiln again.
//!
//! `run_to_end` and the control socket's `connect`/`disconnect` handler share one
//! [`LiveNetworks`]: both run on the runner's one thread, never at the same time (the
//! supervisor serves requests only while `run_to_end` waits in it), hence a `RefCell`.

use std::cell::{RefCell, RefMut};
use std::path::PathBuf;
use std::rc::Rc;

use kiln_container::live_networks::{ConnectError, LiveNetworks};
use kiln_container::monitor::NetworkRequests;
use kiln_container::start::StartConfig;
use kiln_store::{ContainerDir, ContainerState, Store};

use super::Globals;

/// A container's networks for its runner's whole life.
#[derive(Clone)]
pub(super) struct RunnerNetworks {
    live: Rc<RefCell<LiveNetworks>>,
    root: PathBuf,
}

impl RunnerNetworks {
    pub(super) fn new(
        globals: &Globals,
        store: &Store,
        dir: &ContainerDir,
        state: &ContainerState,
        start: &StartConfig,
    ) -> RunnerNetworks {
        let live = LiveNetworks::new(store, dir, &state.name, start.clone());
        RunnerNetworks {
            live: Rc::new(RefCell::new(live)),
            root: globals.root.clone(),
        }
    }

    pub(super) fn live(&self) -> RefMut<'_, LiveNetworks> {
        self.live.borrow_mut()
    }

    fn globals(&self) -> Globals {
        Globals {
            root: self.root.clone(),
            quiet: true,
        }
    }
}

impl NetworkRequests for RunnerNetworks {
    fn connect(
        &mut self,
        pid: Option<i32>,
        network: &str,
        aliases: &[String],
    ) -> Result<(), ConnectError> {
        let joined = self.live().connect(pid, network, aliases)?;
        // Its containers find the new one by name through the network's responder.
        if let Some(joined) = joined {
            super::network::start_responders(&self.globals(), &[joined])
                .map_err(|e| ConnectError::Interface(format!("connected, but {e}")))?;
        }
        Ok(())
    }

    fn disconnect(&mut self, network: &str) -> Result<(), ConnectError> {
        if let Some(idle) = self.live().disconnect(network)? {
            super::network_later::remove_idle_network_later(&self.globals(), &idle);
        }
        Ok(())
    }
}
