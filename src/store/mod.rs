//! The store (owned by the lead).
pub mod digest;
pub use digest::Digest;
