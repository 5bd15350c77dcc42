//! `registry-mock` binary: runs the registry until SIGTERM or SIGINT, for tests written in
//! shell or for poking at it by hand. Prints its address as the first line of stdout so a
//! caller that asked for port 0 learns the port.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use registry_mock::{read_users_file, AuthMode, Config, Faults, Server, Storage, User};

/// An OCI distribution server with token auth and injected faults, for tests.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// none, basic or token (Docker Hub-style bearer tokens).
    #[arg(long, default_value = "none")]
    auth: AuthMode,
    /// File of users, one `name:password[:pull,push,delete]` per line.
    #[arg(long)]
    users: Option<PathBuf>,
    /// A user, `name:password[:pull,push,delete]`; may be repeated.
    #[arg(long = "user")]
    user: Vec<User>,
    /// Faults for every repository request, e.g. `e503x2.trickle5` (see the README).
    #[arg(long)]
    fault: Option<Faults>,
    /// Keep images in this directory instead of in memory.
    #[arg(long)]
    storage: Option<PathBuf>,
    /// Seconds a bearer token stays valid.
    #[arg(long, default_value_t = 300)]
    token_lifetime: u64,
    /// Require credentials for pulls too.
    #[arg(long)]
    no_anonymous_pull: bool,
    /// Answer every cross-repository mount with 202 instead of mounting.
    #[arg(long)]
    decline_mounts: bool,
    /// Host name used in the Location of redirected blob GETs.
    #[arg(long, default_value = "localhost")]
    redirect_host: String,
    /// Serve /token on a listener of its own, named by this host in challenges.
    #[arg(long, value_name = "HOST")]
    token_host: Option<String>,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    allow_remote: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("registry-mock: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(format!(
            "refusing to listen on {}: this is a test registry; pass --allow-remote to \
             listen beyond loopback",
            args.listen
        ));
    }
    let mut users = args.user;
    if let Some(path) = &args.users {
        users.extend(read_users_file(path).map_err(|e| e.to_string())?);
    }
    let config = Config {
        listen: args.listen,
        auth: args.auth,
        users,
        anonymous_pull: !args.no_anonymous_pull,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        storage: args.storage.map_or(Storage::Memory, Storage::Directory),
        faults: args.fault.unwrap_or_default(),
        decline_mounts: args.decline_mounts,
        redirect_host: args.redirect_host,
        token_host: args.token_host,
        log_to_stderr: true,
        ..Config::default()
    };
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // wait for `SigSet::wait` below instead of killing the process mid-write.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let server = Server::start(config).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", server.addr())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot print the address: {e}"))?;
    eprintln!(
        "registry-mock: listening on {} (redirect listener {}{})",
        server.addr(),
        server.redirect_addr(),
        server
            .token_addr()
            .map(|a| format!(", token listener {a}"))
            .unwrap_or_default()
    );
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for signals: {e}"))?;
    eprintln!("registry-mock: {signal}, shutting down");
    server.shutdown();
    Ok(())
}
