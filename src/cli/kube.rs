//! `kiln kube IMAGE|CONTAINER`: a Kubernetes Pod (or Deployment) that runs the image as
//! `kiln run` would, keeping the limits and isolation tested with kiln.
//!
//! Exists so that a team moving to a cluster does not rewrite by hand what the spec's
//! `run:` settings (or a container's flags) already say. The manifest comes from the same
//! runtime spec `kiln run` starts from: the command and environment the image and its
//! settings give, the user resolved in the image, the exact capability set (all dropped,
//! then each one kiln gives added back, so no runtime default widens it), the memory and
//! CPU limits, a read-only root, the published container ports, and the hardening kiln
//! always has (no privilege escalation, the runtime's default seccomp profile).

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;

use super::{CmdResult, Failure, Globals};
use kiln_container::start::StartConfig;
use kiln_container::{ContainerConfig, RunSettings, Source};
use kiln_runtime::{CapabilitySet, ContainerSpec};

#[derive(Args, Debug)]
#[command(
    about = "Print a Kubernetes Pod (or Deployment) that runs an image or container as kiln does",
    after_help = "Examples:\n  kiln kube hello > pod.yaml && kubectl apply -f pod.yaml\n  kiln kube --deployment --name web hello:1\n  kiln push hello reg.example/hello:1 && kiln kube hello --image reg.example/hello:1\n  kiln kube my-container     # a container's own flags, limits and user"
)]
pub struct KubeArgs {
    /// An image, or a container (its settings as it was run)
    name: String,
    /// The Pod's (and its container's) name [default: from the image's name]
    #[arg(long = "name", value_name = "NAME")]
    pod_name: Option<String>,
    /// Print a Deployment of one replica instead of a bare Pod
    #[arg(long)]
    deployment: bool,
    /// The image the Pod names, e.g. where it was pushed [default: its name in the store]
    #[arg(long, value_name = "REF")]
    image: Option<String>,
}

pub fn kube(globals: &Globals, args: KubeArgs) -> CmdResult {
    let store = globals.store()?;
    let (image, spec, ports) = match store.find_container(&args.name)? {
        Some((dir, state)) => {
            let start = StartConfig::read(&dir)
                .map_err(|e| Failure::user(format!("{}: {e}", state.name)))?;
            (state.image.clone(), start.spec, start.publish)
        }
        None => {
            let source =
                Source::load(&store, &args.name).map_err(|e| Failure::user(&e).hint(e.hint()))?;
            let config = ContainerConfig::merge(&source, &RunSettings::default(), &mut |_| {})
                .map_err(|e| Failure::user(&e).hint(e.hint()))?;
            let ports = config.publish.clone();
            let spec = kiln_container::spec_without_container(&store, &source, config)
                .map_err(|e| Failure::user(&e).hint(e.hint()))?;
            (source.tagged.reference.to_string(), spec, ports)
        }
    };
    let name = match &args.pod_name {
        Some(name) => check_name(name)?,
        None => name_from(&image),
    };
    for setting in not_carried(&spec) {
        eprintln!("warning: a Pod cannot carry {setting}");
    }
    let image = match args.image {
        Some(pushed) => {
            kiln_store::Reference::parse(&pushed, kiln_store::reference::DOCKER_HUB)
                .map_err(|e| Failure::user(format!("--image {pushed}: {e}")))?;
            pushed
        }
        None => {
            if image.starts_with("localhost/") {
                eprintln!(
                    "note: {image} is in kiln's store only: push it (kiln push {image} REGISTRY/NAME) and name it with --image REGISTRY/NAME"
                );
            }
            image
        }
    };
    let pod = pod_spec(&name, &image, &spec, &ports);
    let document = match args.deployment {
        false => Manifest::pod(&name, pod),
        true => Manifest::deployment(&name, pod),
    };
    let yaml = serde_saphyr::to_string(&document)
        .map_err(|e| Failure::user(format!("write the manifest: {e}")))?;
    print!("{yaml}");
    Ok(0)
}

/// A Kubernetes object name (DNS-1123 label): lower-case letters, digits and `-`, at most
/// 63, starting and ending with a letter or digit.
fn check_name(name: &str) -> Result<String, Failure> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    match ok {
        true => Ok(name.to_owned()),
        false => Err(
            Failure::user(format!("--name {name:?}: not a Kubernetes name")).hint(Some(
                "lower-case letters, digits and '-', at most 63, e.g. web-1".into(),
            )),
        ),
    }
}

/// The image's last path component, made a Kubernetes name (`localhost/my_app:1` → `my-app`).
fn name_from(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split([':', '@']).next().unwrap_or(base);
    let mut name: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c if c.is_ascii_lowercase() || c.is_ascii_digit() => c,
            _ => '-',
        })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_owned();
    match name.is_empty() {
        true => "kiln".into(),
        false => name,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: serde_json::Value,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    labels: BTreeMap<&'static str, String>,
}

impl Manifest {
    fn metadata(name: &str) -> Metadata {
        Metadata {
            name: name.to_owned(),
            labels: BTreeMap::from([("app", name.to_owned())]),
        }
    }

    fn pod(name: &str, pod: PodSpec) -> Manifest {
        Manifest {
            api_version: "v1",
            kind: "Pod",
            metadata: Self::metadata(name),
            spec: serde_json::to_value(pod).expect("pod specs serialise"),
        }
    }

    fn deployment(name: &str, pod: PodSpec) -> Manifest {
        let spec = serde_json::json!({
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": pod,
            },
        });
        Manifest {
            api_version: "apps/v1",
            kind: "Deployment",
            metadata: Self::metadata(name),
            spec,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    /// `false` for a container in a user namespace of its own (`--userns`).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_users: Option<bool>,
    /// The Pod's sysctls (the container's `--sysctl`s).
    #[serde(skip_serializing_if = "Option::is_none")]
    security_context: Option<serde_json::Value>,
    containers: Vec<Container>,
    /// The container's tmpfs mounts, as memory-backed `emptyDir`s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar>,
    working_dir: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<serde_json::Value>,
    security_context: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volume_mounts: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    container_port: u16,
    protocol: &'static str,
}

/// Variables the runtime sets itself in a Pod (kiln sets them in its containers).
const RUNTIME_VARIABLES: [&str; 2] = ["HOSTNAME", "TERM"];

fn pod_spec(
    name: &str,
    image: &str,
    spec: &ContainerSpec,
    ports: &[kiln_spec::PortMapping],
) -> PodSpec {
    let process = &spec.process;
    let (command, args) = match process.argv.split_first() {
        Some((first, rest)) => (vec![first.clone()], rest.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let env = process
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !RUNTIME_VARIABLES.contains(k))
        .map(|(k, v)| EnvVar {
            name: k.to_owned(),
            value: v.to_owned(),
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let ports = ports
        .iter()
        .filter(|p| seen.insert((p.container_port, p.protocol.to_string())))
        .map(|p| Port {
            container_port: p.container_port,
            protocol: match p.protocol.to_string().as_str() {
                "udp" => "UDP",
                _ => "TCP",
            },
        })
        .collect();
    let (volumes, volume_mounts) = tmpfs_volumes(spec);
    let sysctls: Vec<_> = spec
        .sysctls
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    PodSpec {
        host_users: spec.userns.is_private().then_some(false),
        security_context: (!sysctls.is_empty()).then(|| serde_json::json!({ "sysctls": sysctls })),
        containers: vec![Container {
            name: name.to_owned(),
            image: image.to_owned(),
            command,
            args,
            env,
            working_dir: process.cwd.clone(),
            ports,
            resources: resources(spec),
            security_context: security_context(spec),
            volume_mounts,
        }],
        volumes,
    }
}

/// Each tmpfs of the container as a memory-backed `emptyDir` mounted at the same path, so
/// a read-only root still has the places it writes to.
fn tmpfs_volumes(spec: &ContainerSpec) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    spec.tmpfs
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = format!("tmpfs-{}", i + 1);
            (
                serde_json::json!({ "name": name, "emptyDir": { "medium": "Memory" } }),
                serde_json::json!({ "name": name, "mountPath": path }),
            )
        })
        .unzip()
}

/// Memory and CPU limits (Kubernetes quantities: bytes, millicores), and the memory
/// reservation as the memory request.
fn resources(spec: &ContainerSpec) -> Option<serde_json::Value> {
    let resources = &spec.confinement.resources;
    let mut limits = serde_json::Map::new();
    if let Some(memory) = resources.memory {
        limits.insert("memory".into(), memory.to_string().into());
    }
    if let Some(cpus) = resources.cpus {
        let millis = (cpus * 1000.0).round().max(1.0) as u64;
        limits.insert("cpu".into(), format!("{millis}m").into());
    }
    let mut both = serde_json::Map::new();
    if let Some(reservation) = resources.memory_reservation {
        both.insert(
            "requests".into(),
            serde_json::json!({ "memory": reservation.to_string() }),
        );
    }
    if !limits.is_empty() {
        both.insert("limits".into(), limits.into());
    }
    (!both.is_empty()).then_some(serde_json::Value::Object(both))
}

/// What the container has that a Pod cannot say, each with where Kubernetes sets it
/// instead: the user must know the cluster will not hold the container to it.
fn not_carried(spec: &ContainerSpec) -> Vec<&'static str> {
    let r = &spec.confinement.resources;
    [
        (
            r.pids.is_some(),
            "the pids limit (the kubelet's podPidsLimit sets one per node)",
        ),
        (
            !spec.confinement.rlimits.is_empty(),
            "ulimits (the container runtime's defaults apply)",
        ),
        (
            r.memory_swap.is_some(),
            "memory_swap (the node's swap behaviour decides)",
        ),
        (
            r.cpu_weight.is_some(),
            "the CPU weight (cpu requests set shares in Kubernetes)",
        ),
        (
            r.cpuset_cpus.is_some() || r.cpuset_mems.is_some(),
            "cpuset CPUs or memory nodes (the kubelet's CPU manager pins them)",
        ),
        (
            r.blkio_weight.is_some() || !r.throttles.is_empty(),
            "block I/O weights or rates",
        ),
        (
            !spec.devices.is_empty(),
            "devices (a device plugin gives them)",
        ),
        (
            !spec.mounts.is_empty(),
            "bind mounts of host paths (give the Pod a volume)",
        ),
        (
            spec.shm_size.is_some(),
            "the /dev/shm size (mount a memory emptyDir with a sizeLimit)",
        ),
        (
            matches!(spec.process.network, kiln_runtime::NetworkMode::None),
            "network none (a Pod always has a network; a NetworkPolicy can deny its traffic)",
        ),
        (
            matches!(spec.confinement.seccomp, kiln_runtime::SeccompPolicy::Profile(_)),
            "a seccomp profile file (put it on each node and use seccompProfile type Localhost; RuntimeDefault written instead)",
        ),
    ]
    .into_iter()
    .filter_map(|(set, what)| set.then_some(what))
    .collect()
}

/// The container's capabilities exactly (all dropped, kiln's own added back, so no
/// runtime's default set widens them), its user, root and kiln's hardening.
fn security_context(spec: &ContainerSpec) -> serde_json::Value {
    let confinement = &spec.confinement;
    let add: Vec<String> = CapabilitySet::names(confinement.capabilities.bounding)
        .into_iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let mut context = serde_json::json!({
        "capabilities": { "drop": ["ALL"], "add": add },
        "readOnlyRootFilesystem": spec.read_only,
        "runAsUser": spec.process.uid,
        "runAsGroup": spec.process.gid,
        "allowPrivilegeEscalation": !confinement.no_new_privileges,
        "privileged": false,
    });
    context["seccompProfile"] = match confinement.seccomp {
        kiln_runtime::SeccompPolicy::Unconfined => serde_json::json!({ "type": "Unconfined" }),
        _ => serde_json::json!({ "type": "RuntimeDefault" }),
    };
    if add.is_empty() {
        context["capabilities"] = serde_json::json!({ "drop": ["ALL"] });
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_kubernetes_names() {
        assert_eq!(name_from("localhost/my_App:1"), "my-app");
        assert_eq!(name_from("registry:5000/team/web@sha256:abc"), "web");
        assert_eq!(name_from("localhost/___:1"), "kiln");
        assert!(check_name("web-1").is_ok());
        for bad in ["Web", "-web", "web-", "", "a_b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
