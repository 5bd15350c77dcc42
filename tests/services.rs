//! Containers as services: restart policies, `kiln start`/`restart`/`attach`, healthchecks,
//! and many containers started and stopped in a row. The real binary, real namespaces and
//! cgroups; every wait is bounded, and durations are only loose bounds around what a test
//! asks for.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{
    busybox_image, cgroups_of, kill_pid, processes_of, run_detached, state_file, state_of,
    wait_until,
};
use common::{text, Env};

/// The container's status word as `kiln ps --json` gives it, and its restart count.
fn status_and_restarts(env: &Env, id: &str) -> (String, u64) {
    let entry = state_of(env, id);
    (
        entry["state"].as_str().unwrap().to_owned(),
        entry["restart_count"].as_u64().unwrap(),
    )
}

/// `kiln inspect C` as JSON.
fn inspect(env: &Env, id: &str) -> serde_json::Value {
    serde_json::from_str(&env.kiln_ok(&["inspect", id])).unwrap()
}

/// The processes of the container other than its first one (kiln's init): the command and
/// what it started.
fn command_processes(env: &Env, id: &str) -> Vec<i32> {
    let init = state_file(env, id)["init_pid"].as_i64().map(|p| p as i32);
    processes_of(id)
        .into_iter()
        .filter(|p| Some(*p) != init)
        .collect()
}

#[test]
fn on_failure_restarts_exactly_its_count_then_stays_exited() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "--restart",
            "on-failure:3",
            "bb",
            "sh",
            "-c",
            "echo run; exit 1",
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "three restarts and the end",
        || status_and_restarts(&env, &id) == ("exited".into(), 3),
    );
    // 100 + 200 + 400 ms of delay: nothing more comes after a while.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(status_and_restarts(&env, &id), ("exited".into(), 3));
    assert_eq!(env.kiln_ok(&["logs", &id]).lines().count(), 4);
    assert_eq!(env.kiln_ok(&["wait", &id]), "1");
    let doc = inspect(&env, &id);
    assert_eq!(doc["RestartCount"], 3);
    assert_eq!(doc["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(doc["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(doc["State"]["ExitCode"], 1);

    // A success is not restarted by on-failure.
    let ok = run_detached(&env, &["--restart", "on-failure", "bb", "true"]);
    assert_eq!(env.kiln_ok(&["wait", &ok]), "0");
    assert_eq!(status_and_restarts(&env, &ok), ("exited".into(), 0));
}

#[test]
fn always_survives_a_kill_9_of_its_command_and_stop_ends_it() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "--restart",
            "always",
            "bb",
            "sh",
            "-c",
            "echo started; exec sleep 300",
        ],
    );
    wait_until(Duration::from_secs(10), "the command runs", || {
        !command_processes(&env, &id).is_empty()
    });
    for pid in command_processes(&env, &id) {
        kill_pid(pid, "9");
    }
    wait_until(Duration::from_secs(10), "a restart after kill -9", || {
        status_and_restarts(&env, &id) == ("running".into(), 1)
            && !command_processes(&env, &id).is_empty()
    });
    assert_eq!(env.kiln_ok(&["logs", &id]), "started\nstarted");

    let before = Instant::now();
    assert_eq!(env.kiln_ok(&["stop", "-t", "5", &id]), id.id);
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "sleep ends on SIGTERM"
    );
    std::thread::sleep(Duration::from_millis(500));
    let entry = state_of(&env, &id);
    assert_eq!(
        entry["state"], "exited",
        "a stopped container stays stopped"
    );
    assert_eq!(entry["restart_count"], 1);
    assert!(processes_of(&id).is_empty());
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

#[test]
fn a_stop_during_the_restart_delay_ends_the_restarts() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["--restart", "always", "bb", "sh", "-c", "exit 3"]);
    // The delays double (100, 200, 400, 800 ms …): after four restarts it waits 1.6 s.
    wait_until(Duration::from_secs(20), "four restarts", || {
        status_and_restarts(&env, &id).1 >= 4
    });
    let ps = env.kiln_ok(&["ps"]);
    assert!(
        ps.contains("Restarting (3)") || ps.contains("Up "),
        "ps lists a restarting container: {ps}"
    );
    let before = Instant::now();
    env.kiln_ok(&["stop", &id]);
    assert!(before.elapsed() < Duration::from_secs(5));
    let (status, restarts) = status_and_restarts(&env, &id);
    assert_eq!(status, "exited");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status_and_restarts(&env, &id), ("exited".into(), restarts));
    assert_eq!(env.kiln_ok(&["wait", &id]), "3");
    // And rm -f of a restarting container is as quick.
    let again = run_detached(&env, &["--restart", "always", "bb", "sh", "-c", "exit 3"]);
    wait_until(Duration::from_secs(20), "two restarts", || {
        status_and_restarts(&env, &again).1 >= 2
    });
    let before = Instant::now();
    env.kiln_ok(&["rm", "-f", &again]);
    assert!(before.elapsed() < Duration::from_secs(5));
    assert!(processes_of(&again).is_empty());
}

#[test]
fn a_kill_restarts_always_but_not_unless_stopped() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let always = run_detached(&env, &["--restart", "always", "bb", "sleep", "300"]);
    let unless = run_detached(&env, &["--restart", "unless-stopped", "bb", "sleep", "300"]);
    env.kiln_ok(&["kill", &always, &unless]);
    wait_until(
        Duration::from_secs(10),
        "always restarts after kill",
        || status_and_restarts(&env, &always) == ("running".into(), 1),
    );
    wait_until(Duration::from_secs(10), "unless-stopped ends", || {
        state_of(&env, &unless)["state"] == "exited"
    });
    assert_eq!(env.kiln_ok(&["wait", &unless]), "137");
    assert_eq!(state_of(&env, &unless)["restart_count"], 0);
}

#[test]
fn bad_restart_policies_are_refused_before_anything_starts() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    for (policy, says) in [
        ("sometimes", "unknown restart policy"),
        ("always:3", "only on-failure"),
        ("on-failure:x", "must be a number"),
    ] {
        let out = env.kiln(&["run", "-d", "--restart", policy, "bb", "true"]);
        assert_eq!(out.status.code(), Some(1), "{policy}: {}", text(&out));
        assert!(text(&out).contains(says), "{policy}: {}", text(&out));
    }
    let out = env.kiln(&["run", "--rm", "--restart", "always", "bb", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot be used with"), "{}", text(&out));
    assert_eq!(env.kiln_ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn start_runs_a_stopped_container_again_on_its_own_filesystem() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let count = "n=$(cat /count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count; \
                 echo run $n; exit $((n+4))";
    let id = run_detached(&env, &["--name", "counter", "bb", "sh", "-c", count]);
    assert_eq!(env.kiln_ok(&["wait", "counter"]), "5");
    // Started again in the background: it prints the name it was given, like docker.
    assert_eq!(env.kiln_ok(&["start", "counter"]), "counter");
    assert_eq!(env.kiln_ok(&["wait", "counter"]), "6");
    assert_eq!(env.kiln_ok(&["logs", &id]), "run 1\nrun 2");
    // In the foreground: its output here and its exit code.
    let out = env.kiln(&["start", "-a", "counter"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "run 3\n");
    // The image's tag moving elsewhere does not change the container.
    let other = common::busybox_rootfs(&env, "other");
    std::fs::write(other.join("marker"), "x").unwrap();
    env.kiln_ok(&["import", other.to_str().unwrap(), "-t", "bb"]);
    assert_eq!(env.kiln_ok(&["start", "counter"]), "counter");
    assert_eq!(env.kiln_ok(&["wait", "counter"]), "8");
    assert!(env.kiln_ok(&["logs", &id]).ends_with("run 4"));

    // A container made by a kiln that kept no start settings says what to do.
    std::fs::remove_file(
        env.root()
            .join("containers")
            .join(&id.id)
            .join("start.json"),
    )
    .unwrap();
    let out = env.kiln(&["start", "counter"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("did not keep its start settings") && text(&out).contains("kiln rm"),
        "{}",
        text(&out)
    );
    let out = env.kiln(&["start", "nosuch"]);
    assert!(text(&out).contains("no such container: nosuch"));
}

#[test]
fn restart_stops_and_starts_a_running_container() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "bb",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done",
        ],
    );
    wait_until(Duration::from_secs(10), "it says up", || {
        env.kiln_ok(&["logs", &id]) == "up"
    });
    let first = state_file(&env, &id)["init_pid"].clone();
    // Running already: start leaves it as it is.
    assert_eq!(env.kiln_ok(&["start", &id[..12]]), &id[..12]);
    assert_eq!(state_file(&env, &id)["init_pid"], first);
    assert_eq!(env.kiln_ok(&["restart", "-t", "5", &id]), id.id);
    wait_until(Duration::from_secs(10), "it says up again", || {
        env.kiln_ok(&["logs", &id]) == "up\nup"
    });
    assert_eq!(state_of(&env, &id)["state"], "running");
    assert_ne!(state_file(&env, &id)["init_pid"], first);
}

#[test]
fn attach_follows_the_output_and_exits_with_the_containers_code() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "bb",
            "sh",
            "-c",
            "sleep 1; echo one; echo oops >&2; sleep 0.3; echo two; exit 4",
        ],
    );
    let out = env.kiln(&["attach", &id]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let out = env.kiln(&["attach", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    // Ctrl-C to attach reaches the container (docker's --sig-proxy).
    let id = run_detached(
        &env,
        &[
            "bb",
            "sh",
            "-c",
            "trap 'echo got INT; exit 9' INT; echo ready; while :; do sleep 0.1; done",
        ],
    );
    wait_until(Duration::from_secs(10), "it is ready", || {
        env.kiln_ok(&["logs", &id]) == "ready"
    });
    let mut attach = env.command().args(["attach", &id]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill_pid(attach.id() as i32, "INT");
    let status = attach.wait().unwrap();
    assert_eq!(status.code(), Some(9));
    assert_eq!(env.kiln_ok(&["wait", &id]), "9");
}

#[test]
fn a_foreground_run_ended_with_ctrl_c_is_not_restarted() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let script = "trap 'exit 130' INT; echo up; while :; do sleep 0.1; done";
    let mut run = env
        .command()
        .args([
            "run",
            "--name",
            "fg",
            "--restart",
            "always",
            "bb",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "up");
    kill_pid(run.id() as i32, "INT");
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let (status, restarts) = status_and_restarts(&env, "fg");
    assert_eq!((status.as_str(), restarts), ("exited", 0));
}

#[test]
fn a_healthcheck_turns_healthy_then_unhealthy_and_inspect_shows_why() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "--health-cmd",
            "test -e /ok && echo fine",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "bb",
            "sh",
            "-c",
            "touch /ok; exec sleep 300",
        ],
    );
    wait_until(Duration::from_secs(10), "(healthy) in ps", || {
        env.kiln_ok(&["ps"]).contains("(healthy)")
    });
    let doc = inspect(&env, &id);
    assert_eq!(doc["State"]["Health"]["Status"], "healthy");
    assert_eq!(doc["State"]["Health"]["Log"][0]["Output"], "fine\n");
    env.kiln_ok(&["exec", &id, "rm", "/ok"]);
    wait_until(Duration::from_secs(10), "(unhealthy) in ps", || {
        env.kiln_ok(&["ps"]).contains("(unhealthy)")
    });
    let doc = inspect(&env, &id);
    let health = &doc["State"]["Health"];
    assert_eq!(health["Status"], "unhealthy");
    assert!(health["FailingStreak"].as_u64().unwrap() >= 2);
    assert_eq!(
        env.kiln_ok(&["ps", "-q", "--filter", "health=unhealthy"]),
        &id[..12]
    );
    assert_eq!(env.kiln_ok(&["ps", "-q", "--filter", "health=healthy"]), "");
    let log = health["Log"].as_array().unwrap();
    assert!(log.len() <= 5);
    assert_eq!(log.last().unwrap()["ExitCode"], 1);
    // --no-healthcheck turns off even the one given.
    let none = run_detached(&env, &["--no-healthcheck", "bb", "sleep", "300"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(inspect(&env, &none)["State"].get("Health").is_none());
}

#[test]
fn a_probe_gets_the_containers_confinement_and_nothing_more() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let probe = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; \
                 for n in pid mnt net; do readlink /proc/self/ns/$n; done; id -u; \
                 echo procs $(ls -d /proc/[0-9]* | wc -l)";
    let id = run_detached(
        &env,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CHOWN",
            "-u",
            "nobody",
            "--health-cmd",
            probe,
            "--health-interval",
            "200ms",
            "bb",
            "sleep",
            "300",
        ],
    );
    wait_until(Duration::from_secs(10), "a probe result", || {
        inspect(&env, &id)["State"]["Health"]["Log"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    let doc = inspect(&env, &id);
    let probed = doc["State"]["Health"]["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .to_owned();
    let execd = env.kiln_ok(&["exec", &id, "sh", "-c", probe]);
    // The same confinement, namespaces and user as any exec of the container …
    let same = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with("procs"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        same(&probed),
        same(&execd),
        "probe:\n{probed}\nexec:\n{execd}"
    );
    assert!(probed.contains("\n65534\n"), "{probed}");
    // … which are not the host's: its own PID namespace, a few processes only.
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert!(!probed.contains(host_pid_ns.to_str().unwrap()), "{probed}");
    let procs: usize = probed
        .lines()
        .find_map(|l| l.strip_prefix("procs "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs < 10, "the probe sees the host's processes? {probed}");
}

#[test]
fn a_probe_that_hangs_is_killed_and_one_that_floods_is_cut() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let hang = run_detached(
        &env,
        &[
            "--health-cmd",
            "exec sleep 1000",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            "bb",
            "sleep",
            "300",
        ],
    );
    wait_until(Duration::from_secs(15), "three timed-out probes", || {
        inspect(&env, &hang)["State"]["Health"]["Log"]
            .as_array()
            .is_some_and(|l| l.len() >= 3)
    });
    let doc = inspect(&env, &hang);
    let health = &doc["State"]["Health"];
    assert_eq!(health["Status"], "unhealthy");
    assert_eq!(health["Log"][0]["ExitCode"], -1);
    assert!(health["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .contains("exceeded timeout"));
    // Killed probes leave nothing behind: only the command and at most the current probe.
    let sleepers = command_processes(&env, &hang)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x001000"))
        })
        .count();
    assert!(sleepers <= 1, "{sleepers} probes still run");

    let flood = run_detached(
        &env,
        &[
            "--health-cmd",
            "yes | head -c 5000000",
            "--health-interval",
            "200ms",
            "bb",
            "sleep",
            "300",
        ],
    );
    wait_until(
        Duration::from_secs(15),
        "(healthy) despite the flood",
        || inspect(&env, &flood)["State"]["Health"]["Status"] == "healthy",
    );
    let doc = inspect(&env, &flood);
    let output = doc["State"]["Health"]["Log"][0]["Output"].as_str().unwrap();
    assert_eq!(output.len(), 4096);
    // The monitor kept up: the container is still answering.
    assert_eq!(env.kiln_ok(&["exec", &flood, "echo", "hi"]), "hi");
}

#[test]
fn fifty_detached_containers_started_and_stopped_leave_nothing_behind() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let mut ids = Vec::new();
    for round in 0..5 {
        let batch: Vec<String> = (0..10)
            .map(|i| {
                let name = format!("c{round}-{i}");
                common::containers::run_detached_id(
                    &env,
                    &[
                        "--name",
                        &name,
                        "--restart",
                        "on-failure",
                        "bb",
                        "sleep",
                        "300",
                    ],
                )
            })
            .collect();
        let mut stop = vec!["stop", "-t", "5"];
        stop.extend(batch.iter().map(String::as_str));
        env.kiln_ok(&stop);
        ids.extend(batch);
    }
    for id in &ids {
        assert_eq!(state_of(&env, id)["state"], "exited", "{id}");
    }
    let mut rm = vec!["rm"];
    rm.extend(ids.iter().map(String::as_str));
    env.kiln_ok(&rm);
    for id in &ids {
        assert!(processes_of(id).is_empty(), "processes of {id} are left");
        assert!(
            cgroups_of(id).is_empty(),
            "cgroups of {id}: {:?}",
            cgroups_of(id)
        );
    }
    let store = env.root().display().to_string();
    let mounts: Vec<String> = common::mounts()
        .lines()
        .filter(|l| l.contains(&store))
        .map(str::to_owned)
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");
    let monitors = Command::new("pgrep")
        .args(["-f", &format!("container-monitor -- --root {store}")])
        .output()
        .unwrap();
    assert!(
        monitors.stdout.is_empty(),
        "monitors left: {}",
        String::from_utf8_lossy(&monitors.stdout)
    );
    assert_eq!(env.kiln_ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn the_specs_restart_key_applies_and_the_flag_overrides_it() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    env.write(
        "app/kiln.yaml",
        "image: flaky:latest\nfrom: bb\nconfig:\n  cmd: [sh, -c, 'echo run; exit 2']\nrun:\n  restart: on-failure:2\n",
    );
    let built = env.kiln_in("app", &["build", "-q"]);
    assert!(built.status.success(), "{}", text(&built));
    let id = run_detached(&env, &["flaky"]);
    wait_until(Duration::from_secs(20), "two restarts and the end", || {
        status_and_restarts(&env, &id) == ("exited".into(), 2)
    });
    assert_eq!(
        inspect(&env, &id)["HostConfig"]["RestartPolicy"]["Name"],
        "on-failure"
    );
    let flag = run_detached(&env, &["--restart", "no", "flaky"]);
    assert_eq!(env.kiln_ok(&["wait", &flag]), "2");
    assert_eq!(status_and_restarts(&env, &flag), ("exited".into(), 0));
    // --rm has no restart policy, whatever the spec says.
    let out = env.kiln(&["run", "--rm", "flaky"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "run\n");

    // A bad value is located in the spec, with the words that work.
    env.write(
        "bad/kiln.yaml",
        "image: bad:latest\nfrom: bb\nrun:\n  restart: sometimes\n",
    );
    let out = env.kiln_in("bad", &["build"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("kiln.yaml:4:12") && said.contains("unknown restart policy"),
        "{said}"
    );
    assert!(said.contains("on-failure[:N]"), "{said}");
}

#[test]
fn inspect_shows_a_containers_settings_under_dockers_names() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "--name",
            "svc",
            "--memory",
            "64m",
            "--memory-reservation",
            "32m",
            "--cpu-shares",
            "512",
            "--ulimit",
            "nofile=100:200",
            "--shm-size",
            "32m",
            "--sysctl",
            "kernel.shmmax=1048576",
            "--read-only",
            "--restart",
            "unless-stopped",
            "bb",
            "sleep",
            "300",
        ],
    );
    let doc = inspect(&env, "svc");
    assert_eq!(doc["Id"], id.id.as_str());
    assert_eq!(doc["Name"], "svc");
    assert_eq!(doc["State"]["Status"], "running");
    assert_eq!(doc["State"]["Running"], true);
    assert!(doc["State"]["Pid"].as_i64().unwrap() > 1);
    let host = &doc["HostConfig"];
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["MemoryReservation"], 32 << 20);
    assert_eq!(host["CpuShares"], 512);
    assert_eq!(host["ShmSize"], 32 << 20);
    assert_eq!(host["Ulimits"][0]["Name"], "nofile");
    assert_eq!(host["Ulimits"][0]["Hard"], 200);
    assert_eq!(host["Sysctls"]["kernel.shmmax"], "1048576");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(doc["Config"]["Cmd"][0], "sleep");
    // An image of the same name is still reachable. (Not by the name "bb": a container
    // id is found by its prefix too, and one in 256 starts with "bb".)
    env.kiln_ok(&["tag", "bb", "busy"]);
    let image: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "--type", "image", "busy"])).unwrap();
    assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
    let out = env.kiln(&["inspect", "--type", "container", "busy"]);
    assert!(
        text(&out).contains("no such container: busy"),
        "{}",
        text(&out)
    );
}

/// Reads `master` until `needle` appears in what it gave, or fails after `limit`.
fn read_until(master: &mut std::fs::File, needle: &str, limit: Duration) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            start.elapsed() < limit,
            "{needle:?} not within {limit:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd record.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } > 0 {
            match master.read(&mut buf) {
                Ok(n @ 1..) => seen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn attach_passes_stdin_to_a_container_run_with_di() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let script = "read line; echo got $line; echo err >&2; exit 3";
    let id = run_detached(&env, &["-i", "--name", "reader", "bb", "sh", "-c", script]);
    let mut attach = env
        .command()
        .args(["attach", "reader"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut attach.stdin.take().unwrap(), b"hello\n").unwrap();
    let out = attach.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(env.kiln_ok(&["logs", &id]), "got hello");

    // A container run in the foreground keeps its output there: attach says so.
    let mut fg = env
        .command()
        .args(["run", "--name", "fg", "bb", "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the foreground run", || {
        common::containers::ps_entry(&env, "fg").is_some_and(|e| e["state"] == "running")
    });
    let out = env.kiln(&["attach", "fg"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("foreground"), "{}", text(&out));
    env.kiln_ok(&["stop", "-t", "1", "fg"]);
    let _ = fg.wait();
}

#[test]
fn run_dit_keeps_a_terminal_that_attach_joins_leaves_and_ends() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["-it", "--name", "box", "bb", "sh"]);
    let attach_in_a_terminal = || {
        let size = nix::pty::Winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        let child = env
            .command()
            .args(["attach", "box"])
            .stdin(slave())
            .stdout(slave())
            .stderr(slave())
            .spawn()
            .unwrap();
        (child, std::fs::File::from(pty.master))
    };
    let (mut child, mut master) = attach_in_a_terminal();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut master, b"echo $((6*7)); stty size; tty\r").unwrap();
    let seen = read_until(&mut master, "/dev/pts/", Duration::from_secs(10));
    assert!(seen.contains("42"), "{seen}");
    assert!(
        seen.contains("33 111"),
        "the container's terminal has ours' size: {seen}"
    );
    // Ctrl-C reaches the shell in the container, not kiln: a sleep is interrupted.
    std::io::Write::write_all(&mut master, b"sleep 100\r").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut master, b"\x03echo after-ctrl-c\r").unwrap();
    read_until(&mut master, "after-ctrl-c\r\n", Duration::from_secs(10));
    // Ctrl-P Ctrl-Q leaves it running.
    std::io::Write::write_all(&mut master, b"\x10\x11").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(state_of(&env, &id)["state"], "running");
    assert!(env.kiln_ok(&["logs", &id]).contains("42"));

    // Attached again, `exit 5` ends the container and attach with its code.
    let (mut child, mut master) = attach_in_a_terminal();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut master, b"exit 5\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5));
    assert_eq!(env.kiln_ok(&["wait", &id]), "5");

    // Started again, it has its terminal again.
    assert_eq!(env.kiln_ok(&["start", "box"]), "box");
    let (mut child, mut master) = attach_in_a_terminal();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut master, b"tty; exit 6\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6));
    assert!(env.kiln_ok(&["logs", &id]).contains("/dev/pts/"));
}
