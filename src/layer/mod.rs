//! Layers: an overlay upper dir ⇄ a reproducible, compressed OCI layer blob.
//!
//! INTERFACE (owned by the layer helper; see the task text for the full contract).
