//! registry-mock: a small OCI distribution server for kiln's tests.
//!
//! The real registry in kiln's tests is Debian's `docker-registry`. What it cannot do on
//! demand is misbehave (injected faults) or authenticate the way Docker Hub does (bearer
//! tokens). This crate will fill that gap; it is filled by a later issue and only builds
//! for now.
