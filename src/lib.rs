//! kiln: build and run containers from a declarative YAML spec.
//!
//! The library holds everything; `main.rs` only calls [`cli::main`]. Modules are layered:
//! each may use the ones listed after it in ARCHITECTURE.md and nothing points back up.
//! Only `cli` prints or reads the environment; the rest report through
//! [`progress::Progress`].

#[doc(hidden)]
#[macro_use]
pub mod testing;

pub mod build;
pub mod cli;
pub mod image;
pub mod layer;
pub mod progress;
pub mod registry;
pub mod runtime;
pub mod spec;
pub mod store;
