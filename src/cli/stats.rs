//! `kiln top` and `kiln stats`: what a running container's cgroup holds and uses.
//!
//! The numbers come from `kiln_cgroups` (`processes`, `usage`), which reads v1 and v2
//! alike; this file only samples, computes CPU % between two samples and prints. `top`
//! runs the host's `ps` on the cgroup's PIDs, as `docker top` does, so USER, TIME and CMD
//! read exactly as `ps` shows them.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;

use super::containers::{container_store, find};
use super::output::{human_binary_size, print_table};
use super::{CmdResult, Failure, Globals};
use kiln_cgroups::{Usage, DEFAULT_CGROUP_ROOT};
use kiln_store::containers::Status;
use kiln_store::{ContainerState, Store};

#[derive(Args, Debug)]
#[command(
    about = "Show the processes of a running container (host PIDs)",
    after_help = "Examples:\n  kiln top web"
)]
pub struct TopArgs {
    /// Container name or ID (a unique ID prefix is enough)
    container: String,
}

#[derive(Args, Debug)]
#[command(
    about = "Show running containers' CPU, memory, process and block I/O usage",
    after_help = "Examples:\n  kiln stats                 # every running container, refreshed each second\n  kiln stats --no-stream web\n  kiln stats --no-stream --json"
)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Print JSON lines instead of a table
    #[arg(long)]
    json: bool,
    /// Container names or IDs (default: every running container)
    containers: Vec<String>,
}

/// How long CPU time is measured over.
const INTERVAL: Duration = Duration::from_secs(1);

fn cgroup_root() -> &'static Path {
    Path::new(DEFAULT_CGROUP_ROOT)
}

fn not_running(key: &str) -> Failure {
    Failure::user(format!("container {key} is not running"))
        .hint(Some("kiln ps lists the running containers".into()))
}

pub fn top(globals: &Globals, args: TopArgs) -> CmdResult {
    let store = container_store(globals)?;
    let (dir, state) = find(&store, &args.container)?;
    if !matches!(dir.status(&state), Status::Running { .. }) {
        return Err(not_running(&args.container));
    }
    let pids = kiln_cgroups::processes(cgroup_root(), &dir.id)
        .map_err(|_| not_running(&args.container))?;
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    let out = Command::new("ps")
        .args(["-o", "pid,user,time,args", "-p", &list.join(",")])
        .output()
        .map_err(|e| {
            Failure::user(format!("run ps: {e}")).hint(Some(
                "kiln top uses the host's ps: apt-get install procps".into(),
            ))
        })?;
    // ps exits 1 when a listed process ended meanwhile; its output still holds the rest.
    std::io::stdout()
        .write_all(&out.stdout)
        .map_err(|e| Failure::user(format!("write: {e}")))?;
    Ok(0)
}

/// A container being watched: its name and ID, and its last sample.
struct Watched {
    name: String,
    id: String,
    last: Option<(Instant, Usage)>,
}

pub fn stats(globals: &Globals, args: StatsArgs) -> CmdResult {
    let store = container_store(globals)?;
    let mut watched = chosen(&store, &args.containers)?;
    let tty = !args.json && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    for w in &mut watched {
        w.last = kiln_cgroups::usage(cgroup_root(), &w.id)
            .ok()
            .map(|u| (Instant::now(), u));
    }
    loop {
        std::thread::sleep(INTERVAL);
        let rows: Vec<Row> = watched.iter_mut().filter_map(sample).collect();
        if tty && !args.no_stream {
            // Home and clear, as docker redraws.
            print!("\x1b[H\x1b[2J");
        }
        print_rows(&rows, args.json);
        if args.no_stream {
            return Ok(0);
        }
        if args.containers.is_empty() {
            // Containers started meanwhile join; ended ones drop out.
            let mut fresh = chosen(&store, &[])?;
            for w in &mut fresh {
                w.last = watched.iter().find(|o| o.id == w.id).and_then(|o| o.last);
            }
            watched = fresh;
        }
    }
}

/// The containers named (each must run), or every running one.
fn chosen(store: &Store, keys: &[String]) -> Result<Vec<Watched>, Failure> {
    let watch = |id: String, state: &ContainerState| Watched {
        name: state.name.clone(),
        id,
        last: None,
    };
    if keys.is_empty() {
        return Ok(store
            .containers()?
            .into_iter()
            .filter(|(d, s)| matches!(d.status(s), Status::Running { .. }))
            .map(|(d, s)| watch(d.id, &s))
            .collect());
    }
    keys.iter()
        .map(|key| {
            let (dir, state) = find(store, key)?;
            match dir.status(&state) {
                Status::Running { .. } => Ok(watch(dir.id, &state)),
                _ => Err(not_running(key)),
            }
        })
        .collect()
}

/// One line of output.
struct Row {
    name: String,
    id: String,
    cpu_percent: Option<f64>,
    usage: Usage,
}

/// A new sample of `w`, with the CPU % since the last one; `None` once it has no cgroup.
fn sample(w: &mut Watched) -> Option<Row> {
    let usage = kiln_cgroups::usage(cgroup_root(), &w.id).ok()?;
    let now = Instant::now();
    let cpu_percent = match (w.last, usage.cpu_ns) {
        (Some((then, before)), Some(cpu)) => before.cpu_ns.map(|b| {
            let wall = now.duration_since(then).as_nanos().max(1) as f64;
            cpu.saturating_sub(b) as f64 / wall * 100.0
        }),
        _ => None,
    };
    w.last = Some((now, usage));
    Some(Row {
        name: w.name.clone(),
        id: w.id.clone(),
        cpu_percent,
        usage,
    })
}

fn print_rows(rows: &[Row], json: bool) {
    if json {
        for r in rows {
            let u = r.usage;
            let line = serde_json::json!({
                "id": r.id,
                "name": r.name,
                "cpu_percent": r.cpu_percent,
                "memory_usage": u.memory,
                "memory_limit": u.memory_limit.or_else(host_memory),
                "pids": u.pids,
                "block_read": u.block_read,
                "block_write": u.block_write,
            });
            println!("{line}");
        }
        return;
    }
    let header = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
        "BLOCK I/O",
    ];
    let table: Vec<Vec<String>> = rows.iter().map(|r| columns(r).to_vec()).collect();
    print_table(&header, &table);
    let _ = std::io::stdout().flush();
}

fn columns(r: &Row) -> [String; 7] {
    let u = r.usage;
    let size = |n: Option<u64>| n.map_or("--".to_string(), human_binary_size);
    let limit = u.memory_limit.or_else(host_memory);
    let mem_percent = match (u.memory, limit) {
        (Some(m), Some(l)) if l > 0 => format!("{:.2}%", m as f64 / l as f64 * 100.0),
        _ => "--".into(),
    };
    [
        r.id[..12].to_owned(),
        r.name.clone(),
        r.cpu_percent.map_or("--".into(), |p| format!("{p:.2}%")),
        format!("{} / {}", size(u.memory), size(limit)),
        mem_percent,
        u.pids.map_or("--".into(), |p| p.to_string()),
        format!("{} / {}", size(u.block_read), size(u.block_write)),
    ]
}

/// The host's memory, the limit of a container without one (as docker shows it).
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
