//! `kiln network create|ls|inspect|rm|connect|disconnect`, and the hidden
//! `kiln network-dns` (a network's DNS responder, started by the first container's
//! runner) and `kiln network-reclaim` (an idle network's bridge and table removed).
//!
//! Named networks live in kiln-container (`named_network`); this file is their command
//! line: flags, what is printed, docker's JSON shapes.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::{Args, Subcommand};
use kiln_container::container_networks::{self, Joined, DEFAULT_NETWORK};
use kiln_container::live_networks::{ConnectError, LiveNetworks};
use kiln_container::monitor::{self, Reply};
use kiln_container::named_network::{
    self, CreateRequest, Definition, NamedNetworkError, NetworkChoice,
};
use kiln_container::start::StartConfig;
use kiln_network::dns::serve::{nameservers, Bound, Responder};
use kiln_store::Store;
use serde_json::{json, Value};

use super::{CmdResult, Failure, Globals};

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    Create(CreateArgs),
    #[command(alias = "list")]
    Ls(LsArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
    Connect(ConnectArgs),
    Disconnect(DisconnectArgs),
}

/// Make a named network: containers on it (kiln run --network NAME) reach each other by
/// name and alias
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kiln network create web\n  kiln network create --subnet 10.90.7.0/24 --internal backend\n  kiln run -d --name db --network backend --network-alias database hello\n  kiln run --rm --network backend hello wget -qO- http://database/\n  kiln network connect web db\n  kiln network inspect backend"
)]
pub struct CreateArgs {
    /// IPv4 subnet, e.g. 10.90.7.0/24 (default: the first free /24 from 10.89.1.0)
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// No outbound traffic: no NAT, nothing forwarded to or from other interfaces
    #[arg(long)]
    internal: bool,
    /// Resolver the network's DNS forwards other names to, instead of the host's
    /// (repeatable)
    #[arg(long, value_name = "IP")]
    dns: Vec<IpAddr>,
    /// Network name: letters, digits, '-' and '_', starting with a letter
    name: String,
}

/// List networks
#[derive(Args, Debug)]
pub struct LsArgs {
    /// One JSON object per network
    #[arg(long)]
    json: bool,
}

/// Show networks as JSON, with the containers attached
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

/// Remove named networks (refused while a container is attached)
#[derive(Args, Debug)]
pub struct RmArgs {
    /// No error for a network that does not exist
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    networks: Vec<String>,
}

/// Put a container on a named network too: a running one at once (its next interface,
/// eth1, …, routing only that network's subnet), a stopped one at its next start
#[derive(Args, Debug)]
#[command(
    after_help = "The container reaches the network's containers by name, and they reach it by its \
name, short ID and aliases. A restart or kiln start keeps the network.\n\nExamples:\n  \
kiln network connect backend web\n  kiln network connect --alias api backend web\n  \
kiln network disconnect backend web"
)]
pub struct ConnectArgs {
    /// Another name the container has on this network (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    aliases: Vec<String>,
    network: String,
    container: String,
}

/// Take a container off a named network: a running one at once (its interface is
/// removed), a stopped one from its next start; the last one too (loopback only)
#[derive(Args, Debug)]
pub struct DisconnectArgs {
    network: String,
    container: String,
}

fn named_failure(e: NamedNetworkError) -> Failure {
    let hint = e.hint();
    Failure::user(e).hint(hint)
}

pub fn run(globals: &Globals, command: NetworkCommand) -> CmdResult {
    let store = globals.store()?;
    match command {
        NetworkCommand::Create(a) => create(&store, a),
        NetworkCommand::Ls(a) => ls(globals, &store, a),
        NetworkCommand::Inspect(a) => inspect(&store, a),
        NetworkCommand::Rm(a) => rm(&store, a),
        NetworkCommand::Connect(a) => connect(&store, a),
        NetworkCommand::Disconnect(a) => disconnect(&store, a),
    }
}

fn create(store: &Store, args: CreateArgs) -> CmdResult {
    let subnet = args
        .subnet
        .as_deref()
        .map(|s| {
            s.parse::<kiln_network::Subnet>().map_err(|e| {
                Failure::user(format!("--subnet {s}: {e}"))
                    .hint(Some("e.g. --subnet 10.90.7.0/24".into()))
            })
        })
        .transpose()?;
    let request = CreateRequest {
        name: args.name,
        subnet,
        internal: args.internal,
        dns: args.dns,
    };
    let definition = named_network::create(store, request).map_err(named_failure)?;
    println!("{}", definition.id);
    Ok(0)
}

/// One row of `kiln network ls`.
struct Row {
    id: String,
    name: String,
    driver: &'static str,
    subnet: String,
    internal: bool,
}

/// The networks every container may use without creating one (docker's pre-defined
/// `bridge`, `host` and `none`), then the store's named networks.
fn ls_rows(store: &Store) -> Result<Vec<Row>, Failure> {
    let builtin = |name: &str, driver, subnet: String| Row {
        id: name.to_owned(),
        name: name.to_owned(),
        driver,
        subnet,
        internal: false,
    };
    // An ordinary user's `bridge` is pasta, with the host's addresses, not kiln's subnet.
    let (driver, subnet) = match kiln_container::rootless_network::uses_pasta() {
        true => ("pasta", String::new()),
        false => (
            "bridge",
            kiln_container::network::default_subnet().to_string(),
        ),
    };
    let mut rows = vec![
        builtin("bridge", driver, subnet),
        builtin("host", "host", String::new()),
        builtin("none", "null", String::new()),
    ];
    for d in named_network::list(store).map_err(named_failure)? {
        rows.push(Row {
            id: d.short_id().to_owned(),
            driver: "bridge",
            subnet: d.subnet.clone(),
            internal: d.internal,
            name: d.name,
        });
    }
    Ok(rows)
}

fn ls(globals: &Globals, store: &Store, args: LsArgs) -> CmdResult {
    let rows = ls_rows(store)?;
    if globals.quiet {
        for row in &rows {
            println!("{}", row.name);
        }
        return Ok(0);
    }
    if args.json {
        for row in &rows {
            let line = json!({
                "Name": row.name, "ID": row.id, "Driver": row.driver,
                "Subnet": row.subnet, "Internal": row.internal,
            });
            println!("{line}");
        }
        return Ok(0);
    }
    println!(
        "{:<14}{:<24}{:<8}{:<18}INTERNAL",
        "NETWORK ID", "NAME", "DRIVER", "SUBNET"
    );
    for row in &rows {
        println!(
            "{:<14}{:<24}{:<8}{:<18}{}",
            row.id, row.name, row.driver, row.subnet, row.internal
        );
    }
    Ok(0)
}

fn inspect(store: &Store, args: InspectArgs) -> CmdResult {
    let mut docs = Vec::new();
    for key in &args.networks {
        let definition = named_network::find(store, key).map_err(named_failure)?;
        docs.push(inspect_document(store, &definition)?);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Array(docs)).expect("json")
    );
    Ok(0)
}

/// docker's `network inspect` document of a named network.
fn inspect_document(store: &Store, d: &Definition) -> Result<Value, Failure> {
    let attached = named_network::attached(store, d).map_err(named_failure)?;
    let prefix = d.subnet().map_err(named_failure)?.prefix();
    let mut containers = serde_json::Map::new();
    for (address, lease) in attached {
        let name = named_network::container_name(store, &lease.owner);
        // The lease keeps name, short ID, then the aliases.
        let aliases: Vec<&String> = lease.names.iter().skip(2).collect();
        let mac = kiln_network::bridge::container_mac(address)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        containers.insert(
            lease.owner.clone(),
            json!({
                "Name": name,
                "IPv4Address": format!("{address}/{prefix}"),
                "MacAddress": mac,
                "Aliases": aliases,
            }),
        );
    }
    let gateway = d.gateway().map_err(named_failure)?;
    let network = d.network(store).map_err(named_failure)?;
    Ok(json!({
        "Name": d.name,
        "Id": d.id,
        "Created": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(d.created)).to_string(),
        "Scope": "local",
        "Driver": "bridge",
        "Internal": d.internal,
        "IPAM": { "Driver": "default", "Config": [{ "Subnet": d.subnet, "Gateway": gateway.to_string() }] },
        "Containers": containers,
        "Options": {
            "com.docker.network.bridge.name": network.config().bridge,
            "dev.kiln.nftables.table": network.config().table,
        },
        "DNS": d.dns.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "Labels": {},
    }))
}

fn rm(store: &Store, args: RmArgs) -> CmdResult {
    let mut code = 0;
    for key in &args.networks {
        if ["bridge", "host", "none"].contains(&key.as_str()) {
            let failure = Failure::user(format!(
                "{key} is a pre-defined network and cannot be removed"
            ));
            super::output::print_failure(&failure);
            code = super::EXIT_USER_ERROR;
            continue;
        }
        match named_network::remove(store, key) {
            Ok(d) => println!("{}", d.name),
            Err(NamedNetworkError::NotFound(_)) if args.force => {}
            Err(e) => {
                super::output::print_failure(&named_failure(e));
                code = super::EXIT_USER_ERROR;
            }
        }
    }
    Ok(code)
}

/// A change of a container's named networks.
enum Change {
    Connect {
        network: String,
        aliases: Vec<String>,
    },
    Disconnect {
        network: String,
    },
}

impl Change {
    /// The control socket's request asking a running container's runner.
    fn request(&self) -> String {
        match self {
            Change::Connect { network, aliases } => {
                let mut words = vec!["connect", network.as_str()];
                words.extend(aliases.iter().map(String::as_str));
                words.join(" ")
            }
            Change::Disconnect { network } => format!("disconnect {network}"),
        }
    }

    /// The change made to a stopped container's start config.
    fn apply(&self, live: &mut LiveNetworks) -> Result<(), ConnectError> {
        match self {
            Change::Connect { network, aliases } => live.connect(None, network, aliases).map(drop),
            Change::Disconnect { network } => live.disconnect(network).map(drop),
        }
    }
}

/// How long a runner may take to make or remove an interface (and start a responder).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `change` on container `key`: a running one's runner makes it (it holds the
/// leases), a stopped one's start config takes it (its next start attaches it).
fn change_networks(store: &Store, key: &str, change: Change) -> CmdResult {
    let Some((dir, state)) = store.find_container(key)? else {
        return Err(Failure::user(format!("no such container: {key}"))
            .hint(Some("kiln ps -a lists the containers".into())));
    };
    // A runner that ended as the request came leaves a stopped container: once more.
    for _ in 0..2 {
        if !dir.is_locked() {
            let start = StartConfig::read(&dir).map_err(|e| Failure::user(&e).hint(e.hint()))?;
            let mut live = LiveNetworks::new(store, &dir, &state.name, start);
            change.apply(&mut live).map_err(connect_failure)?;
            return Ok(0);
        }
        let failed = |e: kiln_container::ContainerError| Failure::user(&e).hint(e.hint());
        match monitor::request(&dir, &change.request(), Some(CHANGE_TIMEOUT)).map_err(failed)? {
            Some(Reply::Ok) => return Ok(0),
            Some(Reply::Error(text)) => {
                let (message, hint) = text.split_once('\t').unwrap_or((&text, ""));
                let hint = (!hint.is_empty()).then(|| hint.to_owned());
                return Err(Failure::user(message).hint(hint));
            }
            Some(other) => {
                return Err(Failure::user(format!(
                    "the runner of {} gave an unexpected answer: {other:?}",
                    state.name
                )))
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Err(
        Failure::user(format!("the runner of {} did not answer", state.name)).hint(Some(format!(
            "kiln ps -a shows whether {} still runs",
            state.name
        ))),
    )
}

fn connect_failure(e: ConnectError) -> Failure {
    let hint = e.hint();
    Failure::user(e).hint(hint)
}

fn connect(store: &Store, args: ConnectArgs) -> CmdResult {
    for alias in &args.aliases {
        check_alias("--alias", alias)?;
    }
    let change = Change::Connect {
        network: args.network,
        aliases: args.aliases,
    };
    change_networks(store, &args.container, change)
}

fn disconnect(store: &Store, args: DisconnectArgs) -> CmdResult {
    let change = Change::Disconnect {
        network: args.network,
    };
    change_networks(store, &args.container, change)
}

/// The hidden command that serves a network's DNS (started by [`start_responder`]).
pub const NETWORK_DNS_COMMAND: &str = "network-dns";

/// How long a network's responder stays once the network has no container.
const RESPONDER_LINGER: Duration = Duration::from_secs(3);

#[derive(Args, Debug)]
pub struct NetworkDnsArgs {
    /// `bridge` or a named network
    network: String,
}

/// `kiln network-dns NETWORK`: binds the responder, says `ready` on stdout (the
/// starter waits for it), serves until the network has been idle for a while.
pub fn network_dns(globals: &Globals, args: NetworkDnsArgs) -> CmdResult {
    let store = globals.store()?;
    let failed = |e: kiln_container::ContainerError| Failure::user(&e).hint(e.hint());
    let network = container_networks::network_named(&store, &args.network).map_err(failed)?;
    let mut upstreams = container_networks::own_upstreams(&store, &args.network).map_err(failed)?;
    if upstreams.is_empty() {
        upstreams = host_upstreams();
    }
    let responder =
        match Responder::bind(network, upstreams).map_err(|e| Failure::user(&e).hint(e.hint()))? {
            Bound::Serving(responder) => *responder,
            Bound::AlreadyRunning => return Ok(0),
        };
    println!("ready");
    responder
        .serve(RESPONDER_LINGER)
        .map_err(|e| Failure::user(&e).hint(e.hint()))?;
    Ok(0)
}

/// The host's resolvers (`/etc/resolv.conf`, loopback ones included: the responder
/// runs in the host's namespace).
fn host_upstreams() -> Vec<SocketAddr> {
    nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Starts the responder of each network that needs one unless it runs, and waits until
/// it listens (a container's first lookup must find it): a process of its own, in a
/// session of its own, that outlives this kiln.
pub(super) fn start_responders(globals: &Globals, networks: &[Joined]) -> Result<(), String> {
    for joined in networks.iter().filter(|j| j.needs_responder) {
        if responder_runs(&joined.network) {
            continue;
        }
        start_responder(globals, &joined.label)?;
    }
    Ok(())
}

/// Whether a process holds the network's DNS lock.
fn responder_runs(network: &kiln_network::Network) -> bool {
    let Ok(file) = std::fs::File::open(network.dns_lock_path()) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

fn start_responder(globals: &Globals, label: &str) -> Result<(), String> {
    let mut command = Command::new("/proc/self/exe");
    command
        .arg("--root")
        .arg(&globals.root)
        .arg(NETWORK_DNS_COMMAND)
        .arg(label)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the responder leaves kiln's session so a
    // terminal's hangup does not end it.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("start the DNS responder of network {label}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    // `ready`, or nothing when another responder took the network meanwhile (it exits).
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                return Err(format!(
                    "the DNS responder of network {label} did not start ({status}); kiln -v network-dns {label} says why"
                ));
            }
        }
    }
    // Reaped by a thread while this kiln (a monitor, maybe) lives, else by init.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `--network NAME` and `--network-alias`: the named network a container joins.
pub(super) fn network_choice(
    network: Option<&str>,
    aliases: &[String],
) -> Result<Option<NetworkChoice>, Failure> {
    match network {
        None | Some("none" | "host" | DEFAULT_NETWORK) => {
            if !aliases.is_empty() {
                return Err(Failure::user("--network-alias needs a named network")
                    .hint(Some("kiln network create NAME, then kiln run --network NAME --network-alias ALIAS".into())));
            }
            Ok(None)
        }
        Some(name) => {
            named_network::check_name(name)
                .map_err(|e| Failure::user(format!("--network {name}: {e}")).hint(e.hint()))?;
            for alias in aliases {
                check_alias("--network-alias", alias)?;
            }
            Ok(Some(NetworkChoice {
                name: name.to_owned(),
                aliases: aliases.to_vec(),
            }))
        }
    }
}

/// An alias is a DNS name: labels of letters, digits and '-', dots between.
fn check_alias(flag: &str, alias: &str) -> Result<(), Failure> {
    let valid = !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    match valid {
        true => Ok(()),
        false => Err(
            Failure::user(format!("{flag} {alias:?}: not a DNS name")).hint(Some(
                "letters, digits, '-' and '_' in dot-separated labels".into(),
            )),
        ),
    }
}

/// Applies kiln's config file's `default_subnet:` (the default bridge network's subnet),
/// for the commands that may use networks; an invalid one names its place in the file.
pub fn configure_default_subnet() -> Result<(), Failure> {
    let config = super::pull::kiln_config()?;
    let Some(given) = config.default_subnet else {
        return Ok(());
    };
    let subnet: kiln_network::Subnet = given.value.parse().map_err(|e| {
        Failure::user(given.error("default_subnet", e)).hint(Some(
            "write an IPv4 subnet with its host bits zero, e.g. 10.77.0.0/24".into(),
        ))
    })?;
    kiln_container::network::configure_default_subnet(subnet);
    Ok(())
}
