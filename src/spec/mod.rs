//! The `kiln.yaml` format: parsing, variable substitution and validation.
//!
//! Exists so that every mistake in a spec is caught before any work starts, and is reported
//! as `kiln.yaml:LINE:COL: message (hint)`. The rest of kiln only sees [`model::Spec`].
//!
//! INTERFACE (owned by the spec helper; keep these signatures):
//! - `pub fn load(path: &Path, arg_overrides: &[(String, String)]) -> Result<Spec, SpecError>`
//! - `pub fn parse(text: &str, file: &Path, arg_overrides: &[(String, String)]) -> Result<Spec, SpecError>`
//! - `SpecError`: Display = `FILE:LINE:COL: message` plus ` (hint)` when there is one.

pub mod model;

pub use model::*;
