use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Barrier};

use super::*;

fn ipam(dir: &Path, subnet: &str) -> Ipam {
    Ipam::new(dir, "test", subnet.parse().unwrap())
}

#[test]
fn allocates_in_order_and_reuses_released_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = ipam(dir.path(), "10.89.0.0/24");
    let mut guard = ipam.lock().unwrap();
    let a = guard.allocate("a", "kv-a").unwrap();
    let b = guard.allocate("b", "kv-b").unwrap();
    assert_eq!(a.address, Ipv4Addr::new(10, 89, 0, 2));
    assert_eq!(b.address, Ipv4Addr::new(10, 89, 0, 3));
    let lease = guard.release(a).unwrap().unwrap();
    assert_eq!(lease.owner, "a");
    let c = guard.allocate("c", "kv-c").unwrap();
    assert_eq!(c.address, Ipv4Addr::new(10, 89, 0, 2));
    drop(guard);
    // Another reader sees what was saved.
    let guard = ipam.lock().unwrap();
    let owners: Vec<_> = guard
        .state
        .leases
        .values()
        .map(|l| l.owner.as_str())
        .collect();
    assert_eq!(owners, ["c", "b"]);
    assert_eq!(guard.state.subnet.as_deref(), Some("10.89.0.0/24"));
    drop((b, c));
}

#[test]
fn a_full_subnet_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = ipam(dir.path(), "10.89.0.0/30");
    let mut guard = ipam.lock().unwrap();
    let _only = guard.allocate("a", "kv-a").unwrap();
    let err = guard.allocate("b", "kv-b").unwrap_err();
    assert!(matches!(err, NetworkError::Exhausted { .. }), "{err}");
    assert!(err.hint().is_some());
}

#[test]
fn the_subnet_cannot_change_while_leases_are_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut guard = ipam(dir.path(), "10.89.0.0/24").lock().unwrap();
    let hold = guard.allocate("a", "kv-a").unwrap();
    drop(guard);
    let err = ipam(dir.path(), "10.90.0.0/24").lock().unwrap_err();
    assert!(matches!(err, NetworkError::SubnetInUse { .. }), "{err}");
    let mut guard = ipam(dir.path(), "10.89.0.0/24").lock().unwrap();
    guard.release(hold).unwrap();
    drop(guard);
    // Free again: a new subnet is taken.
    let mut guard = ipam(dir.path(), "10.90.0.0/24").lock().unwrap();
    let hold = guard.allocate("b", "kv-b").unwrap();
    assert_eq!(hold.address, Ipv4Addr::new(10, 90, 0, 2));
}

#[test]
fn a_lease_whose_holder_is_gone_is_reclaimed_and_a_held_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = ipam(dir.path(), "10.89.0.0/24");
    let mut guard = ipam.lock().unwrap();
    let kept = guard.allocate("kept", "kv-kept").unwrap();
    let lost = guard.allocate("lost", "kv-lost").unwrap();
    drop(lost); // as if its kiln had died
    let stale = guard.reclaim_stale().unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].0, Ipv4Addr::new(10, 89, 0, 3));
    assert_eq!(stale[0].1.interface, "kv-lost");
    assert_eq!(guard.state.leases.len(), 1);
    assert!(guard.reclaim_stale().unwrap().is_empty());
    guard.release(kept).unwrap();
    assert!(guard.state.leases.is_empty());
    let leases: Vec<_> = fs::read_dir(dir.path().join("test.leases"))
        .unwrap()
        .collect();
    assert!(leases.is_empty(), "lease files left: {leases:?}");
}

#[test]
fn threads_never_share_an_address() {
    const THREADS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let addresses: Vec<Ipv4Addr> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let ipam = ipam(dir.path(), "10.89.0.0/24");
                scope.spawn(move || {
                    let hold = ipam
                        .lock()
                        .unwrap()
                        .allocate(&format!("t{i}"), "kv")
                        .unwrap();
                    // Every thread holds its lease until all have one.
                    barrier.wait();
                    let address = hold.address;
                    ipam.lock().unwrap().release(hold).unwrap();
                    address
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: BTreeSet<_> = addresses.iter().collect();
    assert_eq!(unique.len(), THREADS, "{addresses:?}");
    assert!(ipam(dir.path(), "10.89.0.0/24")
        .lock()
        .unwrap()
        .state
        .leases
        .is_empty());
}

/// The variable that turns [`ipam_child`] from a no-op into the child of
/// [`processes_never_share_an_address`].
const CHILD_DIR: &str = "KILN_NETWORK_TEST_IPAM_CHILD_DIR";
const PER_CHILD: usize = 5;

#[test]
fn ipam_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let ipam = ipam(Path::new(&dir), "10.89.0.0/24");
    let mut holds = Vec::new();
    for i in 0..PER_CHILD {
        let owner = format!("{}-{i}", std::process::id());
        // A fresh lock per allocation so the processes interleave.
        holds.push(ipam.lock().unwrap().allocate(&owner, "kv").unwrap());
    }
    for hold in &holds {
        println!("leased {}", hold.address);
    }
    // Exits holding them: the leases go stale with the process.
}

#[test]
fn processes_never_share_an_address_and_a_dead_process_leases_are_reclaimed() {
    const CHILDREN: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "ipam::tests::ipam_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut leased = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        leased.extend(
            stdout
                .lines()
                // libtest prints "test NAME ... " on the same line as the first.
                .filter_map(|l| l.split("leased ").nth(1))
                .map(|a| a.parse::<Ipv4Addr>().unwrap()),
        );
    }
    assert_eq!(leased.len(), CHILDREN * PER_CHILD);
    let unique: BTreeSet<_> = leased.iter().collect();
    assert_eq!(
        unique.len(),
        leased.len(),
        "an address was leased twice: {leased:?}"
    );
    let mut guard = ipam(dir.path(), "10.89.0.0/24").lock().unwrap();
    assert_eq!(guard.state.leases.len(), leased.len());
    assert_eq!(guard.reclaim_stale().unwrap().len(), leased.len());
    assert!(guard.state.leases.is_empty());
}

/// A build clones its steps from one process while another step attaches: each clone
/// child holds a copy of the network's lock file until it execs. Dropping the guard must
/// free the lock all the same (it once only closed the file: the stages test hung, a
/// step's attach waiting for a child that waited for it).
#[test]
fn a_dropped_lock_is_free_while_a_forked_child_keeps_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = ipam(dir.path(), "10.89.0.0/24");
    let guard = ipam.lock().unwrap();
    // SAFETY: the child only sleeps and exits (async-signal-safe calls).
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::sleep(3);
            libc::_exit(0);
        }
    }
    assert!(child > 0);
    drop(guard);
    let (tx, rx) = std::sync::mpsc::channel();
    let other = ipam.clone();
    std::thread::spawn(move || {
        let _ = tx.send(other.lock().map(drop));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(2));
    unsafe { libc::kill(child, libc::SIGKILL) };
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    assert!(matches!(got, Ok(Ok(()))), "the lock stayed held: {got:?}");
}

/// A guard handed over stays locked until the process it went to closes it.
#[test]
fn a_handed_over_lock_stays_held_until_its_last_copy_closes() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = ipam(dir.path(), "10.89.0.0/24");
    let held = ipam.lock().unwrap().hand_over();
    let (tx, rx) = std::sync::mpsc::channel();
    let other = ipam.clone();
    std::thread::spawn(move || {
        let _ = tx.send(other.lock().map(drop));
    });
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
    let guard = ipam.adopt(held).unwrap();
    drop(guard);
    assert!(matches!(
        rx.recv_timeout(std::time::Duration::from_secs(2)),
        Ok(Ok(()))
    ));
}
