//! Everything between "an image and some settings" and the runtime: what `kiln run` and
//! `kiln bundle` (and the commands that will manage running containers) share.
//!
//! Exists so that running an image depends neither on the build engine nor on the command
//! line. The command line fills a plain [`RunSettings`] from its flags; this crate merges
//! it over the image's config and the `run:` defaults kept with its tag into one
//! [`ContainerConfig`], resolves the user inside the image, and turns the result into the
//! runtime's `ContainerSpec` — for a container it starts ([`create`]) or for a runc bundle
//! ([`write_bundle`]). A build step is a container too (SECURITY.md rule 11), so the build
//! engine takes its user lookup ([`passwd`]) and its [`confinement`] from here, and the two
//! can never mean different things.
//!
//! It never prints and never reads the process environment: what the user should be told
//! comes back as a [`Notice`] or a [`ContainerError`] (with a [`hint`](ContainerError::hint)),
//! and a `-e K` that takes its value from kiln's environment is resolved by the caller.
//!
//! Files, each using only those before it: `error`, `passwd` (user and group names in an
//! image), `confine` (spec words → `Confinement`), `security` (`--security-opt` words and
//! seccomp profiles), `layer_dirs` (an image's layers unpacked), `source` (the image to run
//! and its stored defaults), `config` (the merge), `container` (the runtime's spec and the
//! container's state record), `bundle` (a runc bundle); and for containers that run on
//! their own: `exec` (what a process exec'd into a running container gets), `log` (a detached container's JSON-lines log, rotated, and the RFC 3339 times
//! it is read by), `monitor` (the runner's loop and control socket), `lifecycle` (kill, stop and
//! wait through it), `live_networks` (connect and disconnect, done by the runner).

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

pub mod attach;
mod bundle;
mod config;
mod confine;
mod container;
pub mod container_networks;
mod error;
pub mod exec;
pub mod health;
mod layer_dirs;
pub mod lifecycle;
pub mod live_networks;
pub mod log;
pub mod monitor;
pub mod named_network;
pub mod network;
pub mod passwd;
pub mod resolv;
pub mod restart;
pub mod rootless_network;
mod security;
mod source;
pub mod start;
mod trim;

pub use bundle::{spec_without_container, write_bundle};
pub use config::{ContainerConfig, HealthSettings, Notice, RunSettings};
pub use confine::{confinement, limits_over, ConfineError, DeviceProblem, SecurityOptions};
pub use container::{create, record_exit, record_restarting, record_start, Launch};
pub use error::{ContainerError, Result};
pub use layer_dirs::ensure_layer_dirs;
pub use source::{stored_run_defaults, Source};
