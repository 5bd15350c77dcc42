//! Detached containers end to end (`kiln run -d`, its monitor, `logs`, `stop`, `kill`,
//! `wait`, `ps`, `rm -f`): the real binary, real namespaces and cgroups. Every wait is
//! bounded; durations are checked only as loose bounds around what a test asks for.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{
    busybox_image, cgroups_of, kill_pid, processes_of, ps_entry, run_detached_id as run_detached,
    state_of, wait_until,
};
use common::{free_port, text, Env};

/// The PID of the monitor running `id` (the runner recorded in its state).
fn monitor_pid(env: &Env, id: &str) -> i32 {
    common::containers::state_file(env, id)["pid"]
        .as_i64()
        .expect("a running container has its runner's pid") as i32
}

#[test]
fn a_detached_web_server_answers_and_stops() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let port = free_port();
    let serve = format!(
        "mkdir -p /www && echo hello from a detached httpd > /www/index.html && \
         exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let started = Instant::now();
    let id = run_detached(
        &env,
        &[
            "--network",
            "host",
            "--name",
            "web",
            "bb",
            "sh",
            "-c",
            &serve,
        ],
    );
    eprintln!("kiln run -d returned after {:?}", started.elapsed());
    let mut page = String::new();
    wait_until(Duration::from_secs(10), "httpd answers", || {
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(b"GET / HTTP/1.0\r\n\r\n");
        page.clear();
        conn.read_to_string(&mut page).is_ok() && !page.is_empty()
    });
    assert!(page.contains("hello from a detached httpd"), "{page}");
    let ps = env.kiln_ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains(" Up "), "{ps}");
    assert!(
        ps.lines()
            .next()
            .unwrap()
            .starts_with("CONTAINER ID   IMAGE"),
        "{ps}"
    );
    // Stops by name, prints the name as given; a short ID prefix works too.
    assert_eq!(env.kiln_ok(&["stop", "web"]), "web");
    assert_eq!(env.kiln_ok(&["wait", &id[..8]]), "143");
    assert_eq!(state_of(&env, &id)["state"], "exited");
    assert!(processes_of(&id).is_empty());
    assert_eq!(env.kiln_ok(&["rm", &id[..10]]), "web");
    assert!(ps_entry(&env, &id).is_none());
}

#[test]
fn logs_follow_tail_and_timestamps() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    // Written after `logs -f` has started: the lines come while it follows.
    let script = "echo first; sleep 1.5; echo second; echo to-stderr >&2; sleep 0.5; echo third";
    let id = run_detached(&env, &["bb", "sh", "-c", script]);
    let mut follow = env
        .command()
        .args(["logs", "-f", &id])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("third") {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("logs -f stopped after {seen:?}: {e}"),
        }
    }
    assert_eq!(seen, ["first", "second", "third"]);
    // It ends by itself once the container has ended.
    wait_until(Duration::from_secs(10), "logs -f ends", || {
        follow.try_wait().unwrap().is_some()
    });
    assert_eq!(env.kiln_ok(&["wait", &id]), "0");

    // --tail counts entries of both streams, in the order they were written.
    let out = env.kiln(&["logs", "--tail", "2", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "third\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    let stamped = env.kiln_ok(&["logs", "-t", "--tail", "1", &id]);
    let (time, line) = stamped.split_once(' ').unwrap();
    assert_eq!(line, "third");
    assert!(
        time.len() == 30 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "an RFC 3339 time with nanoseconds: {time}"
    );
    // The log itself: JSON lines with stream, time and log.
    let raw = std::fs::read_to_string(
        env.root()
            .join("containers")
            .join(&id)
            .join("container.log"),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(first["stream"], "stdout");
    assert_eq!(first["log"], "first\n");
    // --since the last line's time: that line; an hour ago: every line.
    assert_eq!(env.kiln_ok(&["logs", "--since", time, &id]), "third");
    assert_eq!(
        env.kiln_ok(&["logs", "--since", "1h", &id]).lines().count(),
        3
    );
    let out = env.kiln(&["logs", "--since", "yesterday", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn stop_kills_a_command_that_ignores_sigterm_after_the_timeout() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["bb", "sh", "-c", "trap '' TERM; sleep 1000"]);
    wait_until(Duration::from_secs(10), "the container runs", || {
        state_of(&env, &id)["state"] == "running"
    });
    let started = Instant::now();
    assert_eq!(env.kiln_ok(&["stop", "-t", "1", &id]), id);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stop -t 1 took {took:?}"
    );
    assert_eq!(env.kiln_ok(&["wait", &id]), "137");
    let state = state_of(&env, &id);
    assert_eq!(state["exit_code"], 137);
    assert!(
        state["status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (137) "),
        "{state}"
    );
    assert!(processes_of(&id).is_empty());
    // Stopping an exited container is not an error (docker's rule); killing one is.
    assert_eq!(env.kiln_ok(&["stop", &id]), id);
    assert_eq!(env.kiln(&["kill", &id]).status.code(), Some(1));
}

#[test]
fn kill_sends_the_signal_asked_for() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let script = "trap 'echo got USR1; exit 7' USR1; echo ready; while true; do sleep 0.1; done";
    let id = run_detached(&env, &["--name", "sig", "bb", "sh", "-c", script]);
    wait_until(Duration::from_secs(10), "the trap is set", || {
        env.kiln_ok(&["logs", "sig"]).contains("ready")
    });
    assert_eq!(env.kiln_ok(&["kill", "-s", "USR1", "sig"]), "sig");
    assert_eq!(env.kiln_ok(&["wait", "sig"]), "7");
    assert!(env.kiln_ok(&["logs", "sig"]).contains("got USR1"));
    let out = env.kiln(&["kill", "-s", "NOPE", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = env.kiln(&["wait", "no-such-container"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_killed_monitor_takes_its_container_along_and_survives_sighup() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["bb", "sleep", "1000"]);
    wait_until(Duration::from_secs(10), "the container runs", || {
        !processes_of(&id).is_empty()
    });
    let monitor = monitor_pid(&env, &id);
    // A hangup (the caller's terminal closing) changes nothing.
    kill_pid(monitor, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state_of(&env, &id)["state"], "running");
    assert!(!processes_of(&id).is_empty());
    // SIGKILL: the container dies with its monitor, and kiln says so.
    kill_pid(monitor, "KILL");
    wait_until(
        Duration::from_secs(10),
        "the container's processes end",
        || processes_of(&id).is_empty(),
    );
    let state = state_of(&env, &id);
    assert_eq!(state["state"], "exited", "{state}");
    assert_eq!(state["exit_code"], 137);
    assert_eq!(env.kiln_ok(&["wait", &id]), "137");
    assert!(env.kiln_ok(&["ps", "-q"]).is_empty());
    env.kiln_ok(&["rm", &id]);
    // The next container start removes the dead monitor's cgroup.
    env.kiln_ok(&["run", "--rm", "bb", "true"]);
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

#[test]
fn a_detached_rm_container_is_removed_when_it_ends() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["--rm", "bb", "sh", "-c", "sleep 0.3"]);
    wait_until(Duration::from_secs(10), "the container is removed", || {
        !env.root().join("containers").join(&id).exists()
    });
    assert!(ps_entry(&env, &id).is_none());
}

#[test]
fn run_d_of_a_missing_command_fails_at_once() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let out = env.kiln(&["run", "-d", "bb", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no ID: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        text(&out)
    );
    let out = env.kiln(&["run", "-d", "bb", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    let out = env.kiln(&["run", "-d", "no-such-image"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // With a terminal too (`run -dit`): the command is checked before the ID is printed.
    let out = env.kiln(&["run", "-dit", "bb", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no ID: {}", text(&out));
}

#[test]
fn names_stay_unique_and_rm_f_stops_through_the_monitor() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["--name", "one", "bb", "sleep", "1000"]);
    let out = env.kiln(&["run", "-d", "--name", "one", "bb", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    let out = env.kiln(&["rm", "one"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ps = env.kiln_ok(&["ps", "--filter", "status=running", "-q"]);
    assert_eq!(ps, &id[..12]);
    assert_eq!(env.kiln_ok(&["rm", "-f", "one"]), "one");
    assert!(processes_of(&id).is_empty());
    assert!(ps_entry(&env, &id).is_none());
    let out = env.kiln(&["ps", "--filter", "status=sleepy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn many_detached_containers_leave_nothing_behind() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let store = env.root().display().to_string();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = run_detached(&env, &["bb", "sleep", "1000"]);
        assert_eq!(env.kiln_ok(&["stop", "-t", "5", &id]), id);
        assert_eq!(env.kiln_ok(&["rm", &id]), &id[..12]);
        ids.push(id);
    }
    for id in &ids {
        assert!(processes_of(id).is_empty(), "processes of {id} left");
        assert!(
            cgroups_of(id).is_empty(),
            "cgroups left: {:?}",
            cgroups_of(id)
        );
    }
    let mounts = common::mounts();
    assert!(
        !mounts.contains(&store),
        "mounts left under {store}:\n{mounts}"
    );
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
    let monitors = Command::new("pgrep")
        .args(["-f", &format!("container-monitor -- --root {store}")])
        .output()
        .unwrap();
    assert!(
        monitors.stdout.is_empty(),
        "monitors left: {}",
        text(&monitors)
    );
}

#[test]
fn the_log_is_rotated_at_max_size_keeping_max_file_files() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let script = "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done";
    let id = run_detached(
        &env,
        &[
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=2",
            "bb",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(env.kiln_ok(&["wait", &id]), "0");
    let dir = env.root().join("containers").join(&id);
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        assert!(log.metadata().unwrap().len() <= 1024, "{log:?}");
    }
    let kept = env.kiln_ok(&["logs", &id]);
    assert_eq!(kept.lines().last(), Some("line 299"));
    let out = env.kiln(&["run", "-d", "--log-opt", "max-size=big", "bb", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--log-opt"),
        "{}",
        text(&out)
    );
}
