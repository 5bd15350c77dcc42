//! The OCI configuration is accepted by the real `runc` and gives the command what
//! `run_container` gives it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::*;
use crate::tests::{busybox_layer, root_process};
use crate::{
    run_container, BindMount, CapabilitySet, Confinement, DevicePolicy, Overlay, Resources,
    SeccompPolicy,
};

const RUNC: &str = "/usr/sbin/runc";

struct Bench {
    tmp: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        busybox_layer(&tmp.path().join("layers/base"));
        Bench { tmp }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn spec(&self, tag: &str, script: &str) -> ContainerSpec {
        let out = self.dir(&format!("{tag}/out"));
        fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
        ContainerSpec {
            overlay: Overlay {
                layers_dir: self.tmp.path().join("layers"),
                lowers: vec!["base".into()],
                upper: self.dir(&format!("{tag}/upper")),
                work: self.dir(&format!("{tag}/work")),
            },
            read_only: false,
            process: root_process(
                "kiln-oci",
                &["/bin/sh", "-c", &format!("exec >/out/log 2>&1; {script}")],
            ),
            mounts: vec![BindMount {
                source: out,
                target: "/out".into(),
                readonly: false,
            }],
            tmpfs: vec!["/scratch".into()],
            shm_size: None,
            sysctls: vec![],
            devices: vec![],
            etc_hosts: "127.0.0.1 localhost\n".into(),
            etc_resolv_conf: "nameserver 10.0.0.53\n".into(),
            confinement: Confinement {
                resources: Resources {
                    memory: Some(64 << 20),
                    cpus: Some(1.0),
                    pids: Some(64),
                    devices: DevicePolicy::Default,
                    ..Resources::default()
                },
                ..Confinement::default()
            },
            init: true,
            tty: false,
            interactive: false,
            capture_output: false,
            id: format!("oci{}-{tag}", std::process::id()),
            state_dir: self.dir(&format!("{tag}/state")),
            cgroup_root: None,
            userns: Default::default(),
        }
    }

    /// Runs `spec` with runc from a bundle whose rootfs is a copy of the busybox layer.
    fn runc(&self, tag: &str, spec: &ContainerSpec) -> (std::process::ExitStatus, String) {
        let bundle = self.dir(&format!("{tag}/bundle"));
        busybox_layer(&bundle.join("rootfs"));
        write_state_files(spec).unwrap();
        let config = oci_config(spec).unwrap();
        config.save(bundle.join("config.json")).unwrap();
        let state = self.dir(&format!("{tag}/runc-state"));
        let out = Command::new(RUNC)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = fs::read_to_string(spec.mounts[0].source.join("log")).unwrap_or_default();
        assert!(
            out.stderr.is_empty(),
            "runc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, log)
    }

    fn kiln(&self, spec: &ContainerSpec) -> String {
        let exit = run_container(spec).unwrap();
        assert!(exit.status.success(), "{exit:?}");
        fs::read_to_string(spec.mounts[0].source.join("log")).unwrap()
    }
}

const SCRIPT: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; hostname; \
                      cat /etc/resolv.conf; ls /sys/class/net; wc -c < /proc/keys; \
                      touch /scratch/x && echo tmpfs-ok; \
                      if mknod /kmsg c 1 11 2>/dev/null; then echo mknod-ok; \
                      (: > /kmsg) 2>/dev/null && echo kmsg-opened || echo kmsg-denied; fi";

/// Runs SCRIPT in both and compares; returns kiln's output.
fn same_in_runc_and_kiln(tag: &str, caps: CapabilitySet) -> String {
    let bench = Bench::new();
    let mut kiln_spec = bench.spec(&format!("{tag}-kiln"), SCRIPT);
    kiln_spec.confinement.capabilities = caps;
    let kiln = bench.kiln(&kiln_spec);
    let mut runc_spec = bench.spec(&format!("{tag}-runc"), SCRIPT);
    runc_spec.confinement.capabilities = caps;
    let (status, runc) = bench.runc(tag, &runc_spec);
    assert!(status.success(), "runc: {status:?} {runc}");
    let eff = format!("{:016x}", caps.effective);
    assert!(kiln.contains(&format!("CapEff:\t{eff}\n")), "{kiln}");
    assert_eq!(runc, kiln);
    kiln
}

#[test]
fn runc_runs_the_bundle_with_the_default_capabilities() {
    require_root!("cgroups, runc");
    let out = same_in_runc_and_kiln("default", CapabilitySet::default());
    // Both let the container make a kmsg node, and neither lets it open it.
    assert!(out.ends_with("mknod-ok\nkmsg-denied\n"), "{out}");
}

#[test]
fn runc_runs_the_bundle_with_drop_all_add_one() {
    require_root!("cgroups, runc");
    let caps =
        CapabilitySet::resolve(&["NET_BIND_SERVICE".into()], &["ALL".into()], false).unwrap();
    same_in_runc_and_kiln("one", caps);
}

#[test]
fn runc_runs_the_bundle_privileged() {
    require_root!("cgroups, runc");
    let out = same_in_runc_and_kiln("privileged", CapabilitySet::privileged());
    // Every capability, but the device allow-list still applies (it is Resources').
    assert!(out.ends_with("mknod-ok\nkmsg-denied\n"), "{out}");
}

#[test]
fn the_config_carries_limits_namespaces_and_seccomp() {
    let bench = Bench::new();
    let mut spec = bench.spec("json", "true");
    spec.read_only = true;
    let config = serde_json::to_value(oci_config(&spec).unwrap()).unwrap();
    assert_eq!(config["root"], json!({"path": "rootfs", "readonly": true}));
    let linux = &config["linux"];
    assert_eq!(linux["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(linux["resources"]["cpu"]["quota"], 100_000);
    assert_eq!(linux["resources"]["pids"]["limit"], 64);
    let namespaces: Vec<&str> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["pid", "ipc", "uts", "mount", "network"]);
    assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(linux["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/kcore")));
    assert_eq!(config["process"]["capabilities"]["inheritable"], json!([]));
    spec.confinement.seccomp = SeccompPolicy::Unconfined;
    spec.process.network = NetworkMode::Host;
    let config = serde_json::to_value(oci_config(&spec).unwrap()).unwrap();
    assert!(config["linux"].get("seccomp").is_none());
    assert_eq!(config["linux"]["namespaces"].as_array().unwrap().len(), 4);
}

#[test]
fn the_config_device_list_is_kilns_allow_list() {
    let bench = Bench::new();
    let mut spec = bench.spec("devices", "true");
    let devices = |spec: &ContainerSpec| {
        let config = serde_json::to_value(oci_config(spec).unwrap()).unwrap();
        config["linux"]["resources"]["devices"].clone()
    };
    let entry = |major: u32, minor: Option<u32>| match minor {
        Some(minor) => {
            json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"})
        }
        None => json!({"allow": true, "type": "c", "major": major, "access": "rwm"}),
    };
    let deny_all = json!({"allow": false, "type": "a", "access": "rwm"});
    let mut want = vec![
        deny_all.clone(),
        json!({"allow": true, "type": "c", "access": "m"}),
        json!({"allow": true, "type": "b", "access": "m"}),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        want.push(entry(major, Some(minor)));
    }
    want.push(entry(136, None));
    assert_eq!(devices(&spec), json!(want));

    spec.confinement.resources.devices = DevicePolicy::All;
    assert_eq!(
        devices(&spec),
        json!([deny_all, {"allow": true, "type": "a", "access": "rwm"}])
    );
}

/// The cgroup files a container with Docker's finer controls gets, read from the host
/// while its command waits for `/out/go`: under `parent/kiln-<id>` in each v1 hierarchy.
fn finer_cgroup_files(spec: &ContainerSpec, parent: &str) -> Vec<String> {
    let dir = |c: &str| {
        PathBuf::from(cgroups::DEFAULT_CGROUP_ROOT)
            .join(c)
            .join(parent)
            .join(format!("kiln-{}", spec.id))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Once the command runs: runc puts its init in the cgroup before it sets the limits.
    while !spec.mounts[0].source.join("started").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{parent}: never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let files = [
        ("cpu", "cpu.shares"),
        ("cpuset", "cpuset.cpus"),
        ("cpuset", "cpuset.mems"),
        ("memory", "memory.limit_in_bytes"),
        ("memory", "memory.soft_limit_in_bytes"),
        ("memory", "memory.memsw.limit_in_bytes"),
        ("blkio", "blkio.throttle.write_bps_device"),
        ("blkio", "blkio.throttle.read_iops_device"),
    ];
    let values = files
        .iter()
        .map(|(c, f)| {
            let value = fs::read_to_string(dir(c).join(f)).unwrap_or_else(|e| format!("{e}"));
            format!("{f}={}", value.trim())
        })
        .collect();
    fs::write(spec.mounts[0].source.join("go"), "").unwrap();
    values
}

#[test]
fn runc_applies_the_finer_controls_as_kiln_does() {
    require_root!("cgroups, runc");
    let bench = Bench::new();
    let dev = fs::read_to_string("/sys/block/loop0/dev").unwrap();
    let (major, minor) = dev.trim().split_once(':').unwrap();
    let (major, minor): (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
    let finer = |spec: &mut ContainerSpec| {
        let res = &mut spec.confinement.resources;
        res.memory_reservation = Some(32 << 20);
        res.memory_swap = Some(Swap::Limit(128 << 20));
        res.cpu_weight = Some(cgroups::CpuWeight::Shares(512));
        res.cpuset_cpus = Some("0".into());
        res.cpuset_mems = Some("0".into());
        res.throttles = vec![
            cgroups::Throttle {
                kind: ThrottleKind::WriteBps,
                major,
                minor,
                rate: 1 << 20,
            },
            cgroups::Throttle {
                kind: ThrottleKind::ReadIops,
                major,
                minor,
                rate: 100,
            },
        ];
    };
    let wait = "touch /out/started; while [ ! -e /out/go ]; do sleep 0.05; done";
    let mut kiln_spec = bench.spec("finer-kiln", wait);
    finer(&mut kiln_spec);
    let mut runc_spec = bench.spec("finer-runc", wait);
    finer(&mut runc_spec);
    let (kiln, runc) = std::thread::scope(|s| {
        let kiln_run = s.spawn(|| run_container(&kiln_spec).unwrap());
        let kiln = finer_cgroup_files(&kiln_spec, "kiln");
        assert!(kiln_run.join().unwrap().status.success());
        let runc_run = s.spawn(|| bench.runc("finer", &runc_spec));
        let runc = finer_cgroup_files(&runc_spec, "kiln-oci");
        let (status, log) = runc_run.join().unwrap();
        assert!(status.success(), "runc: {status:?} {log}");
        (kiln, runc)
    });
    assert_eq!(
        kiln,
        [
            "cpu.shares=512".to_string(),
            "cpuset.cpus=0".into(),
            "cpuset.mems=0".into(),
            "memory.limit_in_bytes=67108864".into(),
            "memory.soft_limit_in_bytes=33554432".into(),
            "memory.memsw.limit_in_bytes=134217728".into(),
            format!("blkio.throttle.write_bps_device={major}:{minor} 1048576"),
            format!("blkio.throttle.read_iops_device={major}:{minor} 100"),
        ]
    );
    assert_eq!(runc, kiln);
}
