//! Test-only helpers: the gate of the tests that need root, shared by the unit tests and
//! the integration tests (`tests/common`), so both tiers skip and fail the same way.
//!
//! As root every test runs. As another user a privileged test fails, saying why, unless the
//! run is the explicit root-free tier (`KILN_TEST_UNPRIVILEGED=1`): then it prints one
//! `skipped (needs root: …): NAME` line to stderr and returns without checking anything.

use std::io::Write;

/// The variable that selects the root-free tier.
pub const UNPRIVILEGED_VAR: &str = "KILN_TEST_UNPRIVILEGED";

/// Whether a test that needs root for `why` may run: true as root; false (after printing
/// the skip line) in the root-free tier; a panic otherwise, so no run skips silently.
/// `binary` prefixes the test's name (integration test threads are named without it).
pub fn privileged(why: &str, binary: Option<&str>) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    let name = match binary {
        Some(binary) => format!("{binary}::{test}"),
        None => test,
    };
    if std::env::var_os(UNPRIVILEGED_VAR).is_some_and(|v| v == "1") {
        // Straight to the process's stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(std::io::stderr(), "skipped (needs root: {why}): {name}");
        return false;
    }
    panic!(
        "{name} needs root ({why}): run the tests as root (tests/run.sh), or set \
         {UNPRIVILEGED_VAR}=1 to run only the root-free tier and list the rest as skipped"
    );
}

/// First statement of a test that needs root: returns from it in the root-free tier.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::privileged($why, None) {
            return;
        }
    };
}
