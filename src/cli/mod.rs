//! The command line: argument parsing, settings, progress output, errors and exit codes.
//!
//! The only module that knows about clap, terminals and environment variables. Each command
//! lives in its own small file and calls into the library.

mod archive;
mod attach;
mod build;
mod build_progress;
mod check;
mod container_inspect;
mod containers;
mod convert;
mod debug;
mod debug_log;
mod detach;
mod env_args;
mod exec;
mod history;
mod housekeeping;
mod images;
mod import;
mod kube;
mod lifecycle;
mod limits;
mod listing;
mod live_networks;
mod load;
mod login;
mod logs;
mod network;
mod network_later;
mod output;
mod port;
mod pull;
mod push;
mod rootless;
mod run;
mod schema;
mod shell;
mod signals;
mod start;
mod stats;
mod system;
mod template;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use kiln_store::Store;

// One rule for exit codes (README, "Exit codes"), the one docker's CLI follows: 1 for
// anything kiln could not do, 2 for a command line clap rejects, 125 only when a valid
// container could not be started, 126/127 when its command cannot run, and otherwise the
// container's or build step's own code.

/// Exit code when kiln could not do what was asked: bad input of any kind (a spec, a flag's
/// value, an unknown image or container, a wrong password) or a failure outside any
/// container (the store, a registry).
pub const EXIT_USER_ERROR: i32 = 1;
/// Bad command-line usage, as clap reports it.
pub const EXIT_USAGE: i32 = 2;
/// A valid container or build step could not be started (docker's 125).
pub const EXIT_NOT_STARTED: i32 = 125;

/// Whether the command may make or use a bridge network (and so needs the default
/// network's subnet from kiln's config file): any other command runs even when the
/// config file's `default_subnet:` is wrong.
fn uses_networks(command: &Command) -> bool {
    matches!(
        command,
        Command::Build(_)
            | Command::Run(_)
            | Command::Start(_)
            | Command::Restart(_)
            | Command::Gc(_)
            | Command::NetworkReclaim(_)
            | Command::Network(_)
            | Command::NetworkDns(_)
    )
}

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build and run containers from a declarative YAML spec",
    after_help = "Examples:\n  kiln build -t hello            # build ./kiln.yaml\n  kiln images\n  kiln inspect hello"
)]
pub struct Cli {
    /// Store directory [default: /var/lib/kiln as root, else $XDG_DATA_HOME/kiln]
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print only essential output: the digest of build, pull and push; only IDs for images
    /// and ps (as docker's -q)
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print kiln's debug events on stderr (store, cache, layers, registry requests,
    /// cgroups, processes); twice for trace events. KILN_LOG=FILTER sets the filter instead
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Build(Box<build::BuildArgs>),
    Images(images::ImagesArgs),
    Inspect(images::InspectArgs),
    History(history::HistoryArgs),
    Save(archive::SaveArgs),
    Kube(kube::KubeArgs),
    Load(load::LoadArgs),
    Rmi(images::RmiArgs),
    Tag(images::TagArgs),
    Import(import::ImportArgs),
    Pull(pull::PullArgs),
    Push(push::PushArgs),
    Login(login::LoginArgs),
    Logout(login::LogoutArgs),
    Run(Box<run::RunArgs>),
    Bundle(Box<run::BundleArgs>),
    Ps(containers::PsArgs),
    Port(port::PortArgs),
    Rm(containers::RmArgs),
    Logs(logs::LogsArgs),
    Exec(Box<exec::ExecArgs>),
    Top(stats::TopArgs),
    Stats(stats::StatsArgs),
    Stop(lifecycle::StopArgs),
    Kill(lifecycle::KillArgs),
    Wait(lifecycle::WaitArgs),
    Start(start::StartArgs),
    Restart(start::RestartArgs),
    Attach(attach::AttachArgs),
    /// A detached container's monitor (started by `kiln run -d` and `kiln start`)
    #[command(name = "container-monitor", hide = true)]
    ContainerMonitor(detach::MonitorArgs),
    Gc(housekeeping::GcArgs),
    /// Removes the bridge network once no container uses it (started by kiln itself)
    #[command(name = "network-reclaim", hide = true)]
    NetworkReclaim(housekeeping::NetworkReclaimArgs),
    #[command(
        subcommand,
        about = "Manage named networks: containers on one reach each other by name",
        after_help = "Examples:\n  kiln network create web\n  kiln run -d --name api --network web --network-alias backend hello\n  kiln run --rm --network web hello wget -qO- http://backend/\n  kiln network create --internal --subnet 10.90.7.0/24 private\n  kiln network ls\n  kiln network inspect web\n  kiln network rm web"
    )]
    Network(network::NetworkCommand),
    /// A network's DNS responder (started by kiln itself)
    #[command(name = "network-dns", hide = true)]
    NetworkDns(network::NetworkDnsArgs),
    Fsck(housekeeping::FsckArgs),
    #[command(
        subcommand,
        about = "The store as a whole: how much disk images, containers and the build cache use"
    )]
    System(system::SystemCommand),
    Check(check::CheckArgs),
    Completions(shell::CompletionsArgs),
    Man(shell::ManArgs),
    Convert(convert::ConvertArgs),
    Schema(schema::SchemaArgs),
    #[command(hide = true, subcommand)]
    Debug(debug::DebugCommand),
}

/// A failure as the user sees it: one line, an optional hint, an exit code; and, for a
/// spec with several problems, the others.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
    /// Further problems, each printed as an `error:` line.
    pub more: Vec<String>,
    /// A last line after them, e.g. how many problems there were.
    pub footer: Option<String>,
}

impl Failure {
    pub fn user(message: impl std::fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            hint: None,
            code: EXIT_USER_ERROR,
            more: Vec::new(),
            footer: None,
        }
    }

    /// The container (or step) was valid but could not be started.
    pub fn not_started(message: impl std::fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            hint: None,
            code: EXIT_NOT_STARTED,
            more: Vec::new(),
            footer: None,
        }
    }

    pub fn hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl From<kiln_store::StoreError> for Failure {
    fn from(e: kiln_store::StoreError) -> Self {
        Failure::user(e)
    }
}

impl From<kiln_image::ImageError> for Failure {
    fn from(e: kiln_image::ImageError) -> Self {
        Failure::user(e)
    }
}

/// A descriptor's digest that is not kiln's, reported as when an image is loaded.
impl From<kiln_store::digest::BadDigest> for Failure {
    fn from(e: kiln_store::digest::BadDigest) -> Self {
        Failure::from(kiln_image::ImageError::BadDigest(e))
    }
}

pub type CmdResult = Result<i32, Failure>;

/// Global settings every command gets.
pub struct Globals {
    pub root: PathBuf,
    pub quiet: bool,
}

impl Globals {
    pub fn store(&self) -> Result<Store, Failure> {
        check_store_owner(&self.root)?;
        Store::open(&self.root).map_err(|e| {
            Failure::user(e).hint(Some(
                "kiln needs root, or --root pointing at a writable directory".into(),
            ))
        })
    }
}

/// A store is used only by the user who owns it: root's kiln never reads a user's store
/// (its files are owned by the user's subordinate ids and marked with `user.*` overlay
/// xattrs) and a user's kiln never root's. (In an ordinary user's namespace the user is
/// uid 0 and anyone else's file shows as the overflow id.)
fn check_store_owner(root: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(root) else {
        return Ok(()); // made by Store::open, as this user
    };
    if meta.uid() == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    Err(Failure::user(format!(
        "the store {} belongs to another user: kiln keeps one store per user",
        root.display()
    ))
    .hint(Some(
        "run kiln as the store's owner, or use your own store (the default: /var/lib/kiln \
         for root, ~/.local/share/kiln for others; or --root DIR)"
            .into(),
    )))
}

/// SOURCE_DATE_EPOCH as reproducible-builds.org defines it; kiln's default is 0 so builds
/// and imports are reproducible without it.
pub fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(epoch) if epoch <= kiln_image::MAX_EPOCH => Ok(epoch),
            _ => Err(Failure::user(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds up to {} (the year 9999)",
                kiln_image::MAX_EPOCH
            ))),
        },
    }
}

/// A host path the user typed, made absolute against kiln's working directory now. Done
/// once, where arguments are read: threads that mount overlays change their own working
/// directory to `/`, so a relative path used later would name a host path, not the user's.
pub fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| {
        Failure::user(format!(
            "{}: cannot make the path absolute: {e}",
            path.display()
        ))
    })
}

fn default_root() -> PathBuf {
    if !kiln_runtime::userns::rootless() {
        return PathBuf::from("/var/lib/kiln");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("kiln")
}

/// Device nodes of the layers this command applied that an ordinary user's kiln could
/// only make as empty files: said once, after the command's own output.
fn warn_of_device_placeholders() {
    let placeholders = kiln_layer::take_device_placeholders();
    if let Some(first) = placeholders.first() {
        let more = match placeholders.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        eprintln!(
            "warning: device node /{first}{more} in the image became an empty file: only root \
             makes device nodes (containers get /dev from kiln; --device works as root)"
        );
    }
}

/// Layer capture holds one directory fd per level of nesting: allow as many open files as
/// the hard limit does, as Go programs do at start.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A command line clap refused: exit 2 (or 0 for --help and --version, which clap reports
/// as "errors" that print to stdout).
fn usage_error(e: clap::Error) -> i32 {
    let _ = e.print();
    match e.use_stderr() {
        true => EXIT_USAGE,
        false => 0,
    }
}

/// Runs kiln with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // First, while kiln has one thread: a user namespace cannot be entered later.
    if let Err(f) = rootless::enter_if_needed(&cli.command) {
        output::print_failure(&f);
        return f.code;
    }
    signals::install();
    raise_open_file_limit();
    // A monitor reads the command line of the `kiln run -d` or `kiln start` that started it.
    let (cli, monitor) = match cli.command {
        Command::ContainerMonitor(m) => {
            let argv = std::iter::once(std::ffi::OsString::from("kiln")).chain(m.argv);
            match Cli::try_parse_from(argv) {
                Ok(cli) => (cli, true),
                Err(e) => return usage_error(e),
            }
        }
        _ => (cli, false),
    };
    if let Err(f) = debug_log::install(cli.verbose) {
        output::print_failure(&f);
        return f.code;
    }
    let root = match absolute(&cli.root.unwrap_or_else(default_root)) {
        Ok(root) => root,
        Err(f) => {
            output::print_failure(&f);
            return f.code;
        }
    };
    let globals = Globals {
        root,
        quiet: cli.quiet,
    };
    if uses_networks(&cli.command) {
        if let Err(f) = network::configure_default_subnet() {
            output::print_failure(&f);
            return f.code;
        }
    }
    let result = match cli.command {
        Command::Build(a) => build::run(&globals, *a),
        Command::Images(a) => images::images(&globals, a),
        Command::Inspect(a) => images::inspect(&globals, a),
        Command::History(a) => history::history(&globals, a),
        Command::Save(a) => archive::save(&globals, a),
        Command::Kube(a) => kube::kube(&globals, a),
        Command::Load(a) => load::load(&globals, a),
        Command::Rmi(a) => images::rmi(&globals, a),
        Command::Tag(a) => images::tag(&globals, a),
        Command::Import(a) => import::run(&globals, a),
        Command::Pull(a) => pull::run(&globals, a),
        Command::Push(a) => push::run(&globals, a),
        Command::Login(a) => login::login(&globals, a),
        Command::Logout(a) => login::logout(&globals, a),
        Command::Run(a) if monitor && a.detach => detach::monitor(&globals, *a),
        Command::Run(a) => run::run(&globals, *a),
        Command::Bundle(a) => run::bundle(&globals, *a),
        Command::Ps(a) => containers::ps(&globals, a),
        Command::Port(a) => port::port(&globals, a),
        Command::Rm(a) => containers::rm(&globals, a),
        Command::Logs(a) => logs::logs(&globals, a),
        Command::Exec(a) => exec::exec(&globals, *a),
        Command::Top(a) => stats::top(&globals, a),
        Command::Stats(a) => stats::stats(&globals, a),
        Command::Stop(a) => lifecycle::stop(&globals, a),
        Command::Kill(a) => lifecycle::kill(&globals, a),
        Command::Wait(a) => lifecycle::wait(&globals, a),
        Command::Start(a) if monitor => detach::monitor_start(&globals, &a.containers[0]),
        Command::Start(a) => start::start(&globals, a),
        Command::Restart(a) => start::restart(&globals, a),
        Command::Attach(a) => attach::attach(&globals, a),
        Command::ContainerMonitor(_) => {
            Err(Failure::user("a monitor must start a detached kiln run"))
        }
        Command::Gc(a) => housekeeping::gc(&globals, a),
        Command::NetworkReclaim(a) => housekeeping::network_reclaim(&globals, a),
        Command::Network(c) => network::run(&globals, c),
        Command::NetworkDns(a) => network::network_dns(&globals, a),
        Command::Fsck(a) => housekeeping::fsck(&globals, a),
        Command::System(c) => system::run(&globals, c),
        Command::Check(a) => check::check(&globals, a),
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(a),
        Command::Convert(a) => convert::run(&globals, a),
        Command::Schema(a) => schema::schema(a),
        Command::Debug(c) => debug::run(c),
    };
    warn_of_device_placeholders();
    match result {
        Ok(code) => code,
        Err(f) => {
            output::print_failure(&f);
            if let Some(note) = rootless::unmapped_id_note(&f) {
                eprintln!("{note}");
            }
            f.code
        }
    }
}
