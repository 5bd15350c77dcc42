//! Test helpers: named network namespaces made and removed by the test, and the host
//! tools the tests drive them with (a missing one fails naming its Debian package).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::netns::NetNs;

/// A unique suffix per test in this process: pid and a counter.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails the test unless `tool` is installed, naming the package that has it.
pub fn require_tool(tool: &str, package: &str) {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).exists());
    assert!(found, "this test needs {tool}: apt-get install {package}");
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace (`ip netns add`), deleted when dropped.
pub struct TestNetns {
    pub name: String,
    ns: NetNs,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        require_tool("ip", "iproute2");
        let name = format!("kiln-test-{}", unique(tag));
        run("ip", &["netns", "add", &name]);
        let ns = NetNs::open(&Path::new("/run/netns").join(&name)).unwrap();
        TestNetns { name, ns }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command inside the namespace, its output whatever its status.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A host interface a test makes, deleted when dropped (also when the test fails).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
