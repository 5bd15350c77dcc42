//! The sandbox: namespaces, overlay rootfs, pivot_root, /proc and /dev, exec.
//!
//! INTERFACE (owned by the runtime helper; see the task text for the full contract).
