//! `kiln exec`, `kiln top` and `kiln stats` on detached containers: the real binary, real
//! namespaces and cgroups. Every wait is bounded.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{busybox_image, run_detached, wait_until};
use common::{text, Env};

/// `kiln exec ARGS`: (exit code, stdout, stderr).
fn exec(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .command()
        .arg("exec")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kiln exec ARGS` that must exit 0: its stdout, trimmed.
fn exec_ok(env: &Env, args: &[&str]) -> String {
    let (code, out, err) = exec(env, args);
    assert_eq!(code, 0, "kiln exec {args:?}: {out}{err}");
    out.trim().to_owned()
}

/// The host PID of the container's first process, from its state.
fn init_pid(env: &Env, id: &str) -> i32 {
    common::containers::state_file(env, id)["init_pid"]
        .as_i64()
        .expect("a running container's init_pid") as i32
}

/// The lines of a `/proc/PID/status` that state a process's confinement.
fn confinement_lines(status: &str) -> String {
    status
        .lines()
        .filter(|l| {
            l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp:")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Host processes whose command line starts with `needle` (not the `kiln exec` that
/// started one: its command line only contains it).
fn host_processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .starts_with(needle)
            })
        })
        .collect()
}

/// The container's cgroup dir in a v1 controller (this host) or the v2 hierarchy.
fn cgroup_file(id: &str, controller: &str, file: &str) -> String {
    let v1 = format!("/sys/fs/cgroup/{controller}/kiln/kiln-{id}/{file}");
    let v2 = format!("/sys/fs/cgroup/kiln/kiln-{id}/{file}");
    std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("{v1} / {v2}: {e}"))
}

#[test]
fn exec_joins_the_containers_namespaces_and_confinement() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &[
            "--name",
            "box",
            "--hostname",
            "boxhost",
            "--cap-drop",
            "CHOWN",
            "--cap-add",
            "SYS_PTRACE",
            "--read-only",
            "-e",
            "RUNVAR=from-run",
            "bb",
            "sleep",
            "1000",
        ],
    );
    let pid1 = init_pid(&env, &id);
    // The same PID namespace: the container's command is there, with small PIDs.
    let ps = exec_ok(&env, &["box", "ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 1000"), "{ps}");
    assert_eq!(exec_ok(&env, &["box", "hostname"]), "boxhost");
    // Every namespace is the container's first process's.
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        let inside = exec_ok(&env, &["box", "readlink", &format!("/proc/self/ns/{ns}")]);
        let host = std::fs::read_link(format!("/proc/{pid1}/ns/{ns}")).unwrap();
        assert_eq!(inside, host.to_string_lossy(), "{ns} namespace");
    }
    // The same mounts, seen the same way.
    assert_eq!(
        exec_ok(&env, &["box", "cat", "/proc/self/mountinfo"]),
        exec_ok(&env, &["box", "cat", "/proc/1/mountinfo"])
    );
    // Exactly the container's capabilities, no_new_privs and seccomp filter.
    let inside = exec_ok(&env, &["box", "cat", "/proc/self/status"]);
    let host = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    assert_eq!(confinement_lines(&inside), confinement_lines(&host));
    assert!(
        inside.contains("NoNewPrivs:\t1") && inside.contains("Seccomp:\t2"),
        "{inside}"
    );
    let eff = inside
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap();
    let eff = u64::from_str_radix(eff, 16).unwrap();
    assert_eq!(eff & 1, 0, "CAP_CHOWN was dropped");
    assert_ne!(eff & (1 << 19), 0, "CAP_SYS_PTRACE was added");
    // --read-only applies.
    let (code, _, _) = exec(&env, &["box", "touch", "/new-file"]);
    assert_ne!(code, 0, "the root is read-only");
    // The environment of the run, an --env-file over it, the exec's -e over both; -u and -w.
    let env_file = env.write("exec.env", "# for exec\nRUNVAR=file\nFILEVAR=yes\n");
    let env_file = env_file.to_str().unwrap();
    assert_eq!(
        exec_ok(
            &env,
            &[
                "--env-file",
                env_file,
                "box",
                "sh",
                "-c",
                "echo $RUNVAR $FILEVAR"
            ]
        ),
        "file yes"
    );
    assert_eq!(
        exec_ok(&env, &["box", "sh", "-c", "echo $RUNVAR"]),
        "from-run"
    );
    assert_eq!(
        exec_ok(
            &env,
            &["-e", "RUNVAR=exec", "box", "sh", "-c", "echo $RUNVAR"]
        ),
        "exec"
    );
    assert_eq!(exec_ok(&env, &["-u", "nobody", "box", "id", "-u"]), "65534");
    assert_eq!(
        exec_ok(&env, &["-u", "nobody", "box", "sh", "-c", "echo $HOME"]),
        "/nonexistent"
    );
    assert_eq!(exec_ok(&env, &["-w", "/etc", "box", "pwd"]), "/etc");
    assert_eq!(exec_ok(&env, &["box", "pwd"]), "/");
    // Exit codes: the command's own; 127 not found; 126 not executable.
    assert_eq!(exec(&env, &["box", "true"]).0, 0);
    assert_eq!(exec(&env, &["box", "sh", "-c", "exit 3"]).0, 3);
    let (code, _, err) = exec(&env, &["box", "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("not found"), "{err}");
    assert_eq!(exec(&env, &["box", "/etc/passwd"]).0, 126);
    // A workdir that is not there is not created, as docker's exec: 126.
    let (code, _, err) = exec(&env, &["-w", "/no/such/dir", "box", "true"]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("/no/such/dir"), "{err}");
    // --privileged gives every capability and no filter, in the same namespaces.
    let privileged = exec_ok(&env, &["--privileged", "box", "cat", "/proc/self/status"]);
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    assert!(privileged.contains("NoNewPrivs:\t0"), "{privileged}");
}

#[test]
fn a_signal_to_exec_reaches_the_process() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let _box = run_detached(&env, &["--name", "sig", "bb", "sleep", "1000"]);
    let script = "trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.1; done";
    let mut child = env
        .command()
        .args(["exec", "sig", "sh", "-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = [0u8; 6];
    stdout.read_exact(&mut seen).unwrap();
    assert_eq!(&seen, b"ready\n");
    common::run(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string()),
    );
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(5));
}

#[test]
fn exec_it_gets_a_terminal() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let _box = run_detached(&env, &["--name", "term", "bb", "sleep", "1000"]);
    let script =
        "test -t 0 && test -t 1 && echo on-a-terminal; tty; echo $TERM; read line; echo got-$line";
    let mut command = env.command();
    command.args(["exec", "-it", "term", "sh", "-c", script]);
    let (ok, output) = common::on_a_terminal(command, b"typed\n");
    assert!(ok, "{output}");
    assert!(output.contains("on-a-terminal"), "{output}");
    assert!(output.contains("/dev/pts/"), "{output}");
    assert!(output.contains("xterm"), "{output}");
    assert!(output.contains("got-typed"), "{output}");
}

#[test]
fn detached_and_attached_execs_die_with_the_container() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(&env, &["--name", "host", "bb", "sleep", "1000"]);
    let started = Instant::now();
    assert_eq!(exec(&env, &["-d", "host", "sleep", "7771"]).0, 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exec -d returns at once"
    );
    let mut attached = env
        .command()
        .args(["exec", "host", "sleep", "7772"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "both execs run", || {
        !host_processes_with("sleep 7771").is_empty()
            && !host_processes_with("sleep 7772").is_empty()
    });
    // top lists the container's processes, the exec'd ones too, by host PID.
    let top = env.kiln_ok(&["top", "host"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    for needle in ["sleep 1000", "sleep 7771", "sleep 7772"] {
        assert!(top.contains(needle), "{needle} in {top}");
    }
    // The exec'd process is inside the container's PID namespace: two PIDs in NSpid.
    let pid = host_processes_with("sleep 7771")[0];
    assert!(top.contains(&pid.to_string()), "{top}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(nspid.len(), 2, "{status}");
    assert_eq!(nspid[0], pid.to_string());
    // Killing the container ends every process in it.
    env.kiln_ok(&["kill", "host"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = attached.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the attached exec did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(137));
    wait_until(Duration::from_secs(10), "no exec'd process is left", || {
        host_processes_with("sleep 777").is_empty()
    });
    assert_eq!(env.kiln_ok(&["wait", &id]), "137");
    // An exec into a container that ended: exit 1, with a hint.
    let (code, _, err) = exec(&env, &["host", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not running") && err.contains("hint:"),
        "{err}"
    );
    let out = env.kiln(&["top", "host"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (code, _, err) = exec(&env, &["no-such-container", "true"]);
    assert_eq!(code, 1, "{err}");
    env.kiln_ok(&["rm", &id]);
}

#[test]
fn an_exec_cannot_reach_the_host() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let secret = env.write("host-secret", "the host's secret\n");
    let _box = run_detached(&env, &["--name", "probe", "bb", "sleep", "1000"]);
    let attempts: [(&str, String); 8] = [
        ("mount a tmpfs", "mount -t tmpfs none /mnt".into()),
        (
            "mount cgroupfs",
            "mount -t cgroup -o memory none /mnt".into(),
        ),
        (
            "write /proc/sys",
            "echo 1 > /proc/sys/vm/drop_caches".into(),
        ),
        ("write sysrq-trigger", "echo h > /proc/sysrq-trigger".into()),
        ("read a host file", format!("cat {}", secret.display())),
        ("unshare a user namespace", "unshare -U true".into()),
        (
            "remount the root read-write",
            "mount -o remount,rw /proc/sys".into(),
        ),
        ("write /sys", "echo x > /sys/kernel/uevent_helper".into()),
    ];
    for (what, script) in attempts {
        let (code, out, err) = exec(&env, &["probe", "sh", "-c", &script]);
        assert_ne!(code, 0, "{what} worked from exec: {out}{err}");
        assert!(!out.contains("the host's secret"), "{what}: {out}");
    }
    // Only stdio is open: no fd of kiln's reaches the process (ls itself holds one more).
    let fds = exec_ok(&env, &["probe", "ls", "/proc/self/fd"]);
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(fds.len(), 4, "{fds:?}");
    // The host's processes are not visible.
    let ps = exec_ok(&env, &["probe", "ps", "-o", "pid"]);
    assert!(ps.lines().count() <= 4, "{ps}");
}

#[test]
fn stats_agree_with_the_cgroup_files() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let id = run_detached(
        &env,
        &["--name", "load", "--memory", "64m", "bb", "sleep", "1000"],
    );
    exec_ok(&env, &["-d", "load", "sleep", "900"]);
    // Some memory in use: a tmpfs file inside the container counts towards it.
    exec_ok(
        &env,
        &[
            "load",
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=8 2>/dev/null",
        ],
    );
    let line = env.kiln_ok(&["stats", "--no-stream", "--json", "load"]);
    let stats: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(stats["id"], id.id);
    assert_eq!(stats["name"], "load");
    let pids: u64 = cgroup_file(&id, "pids", "pids.current")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stats["pids"], pids);
    assert_eq!(pids, 3, "the init, its command and the exec'd sleep");
    assert_eq!(stats["memory_limit"], 64u64 << 20);
    let usage: u64 = cgroup_file(&id, "memory", "memory.usage_in_bytes")
        .trim()
        .parse()
        .unwrap();
    let shown = stats["memory_usage"].as_u64().unwrap();
    assert!(shown >= 8 << 20, "the 8 MiB file counts: {shown}");
    assert!(
        shown <= usage + (1 << 20) && shown + (4 << 20) >= usage,
        "stats says {shown}, the cgroup {usage}"
    );
    assert!(stats["cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(stats["block_read"].is_u64() && stats["block_write"].is_u64());
    // The table: docker's columns, one row per running container.
    let table = env.kiln_ok(&["stats", "--no-stream"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
        "BLOCK I/O",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id[..12]) && row.contains("64 MiB"),
        "{table}"
    );
    assert!(lines.next().is_none(), "{table}");
    drop(id);
    assert_eq!(
        env.kiln(&["stats", "--no-stream", "load"]).status.code(),
        Some(1)
    );
}
