//! `kiln login` and `kiln logout`: credentials in docker's `config.json`.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use super::pull::{docker_config, RegistryArgs};
use super::{CmdResult, Failure, Globals};
use kiln_registry::{self as registry, Credential, RegistryError};
use kiln_store::reference::DOCKER_HUB;

#[derive(Args, Debug)]
#[command(
    about = "Log in to a registry",
    after_help = "Examples:\n  echo \"$TOKEN\" | kiln login ghcr.io -u me --password-stdin\n  kiln login -u me --password-stdin < pw.txt     # Docker Hub"
)]
pub struct LoginArgs {
    /// Registry HOST[:PORT] [default: Docker Hub]
    registry: Option<String>,
    #[arg(short, long)]
    username: String,
    /// Read the password (or token) from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry_args: RegistryArgs,
}

#[derive(Args, Debug)]
#[command(about = "Remove stored credentials for a registry")]
pub struct LogoutArgs {
    /// Registry HOST[:PORT] [default: Docker Hub]
    registry: Option<String>,
}

/// Where `kiln login` writes: `$REGISTRY_AUTH_FILE` when set (podman's rule), else
/// docker's `config.json`.
fn login_file() -> PathBuf {
    std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(docker_config)
}

/// `https://index.docker.io/v1/`, `docker.io/` and friends → the registry's host.
fn registry_name(arg: Option<&str>) -> String {
    let raw = arg.unwrap_or(DOCKER_HUB);
    let host = raw
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(raw);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_owned(),
        h => h.to_owned(),
    }
}

pub fn login(globals: &Globals, args: LoginArgs) -> CmdResult {
    if !args.password_stdin {
        return Err(
            Failure::user("kiln login reads the password from standard input").hint(Some(
                "pass --password-stdin and pipe the password in".into(),
            )),
        );
    }
    let mut password = String::new();
    std::io::stdin()
        .take(64 << 10)
        .read_to_string(&mut password)
        .map_err(|e| Failure::user(format!("reading the password: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Failure::user("the password on standard input is empty"));
    }
    let registry = registry_name(args.registry.as_deref());
    let credential = Credential::Basic {
        user: args.username.clone(),
        password: password.clone(),
    };
    registry::verify_login(
        &args.registry_args.settings(super::pull::kiln_config()?),
        &registry,
        &credential,
    )
    .map_err(|e| login_failure(&registry, e))?;
    let file = login_file();
    registry::save_login(&file, &registry, &args.username, &password)?;
    if !globals.quiet {
        eprintln!("credentials for {registry} saved in {}", file.display());
    }
    println!("Login Succeeded");
    Ok(0)
}

/// A registry that refuses the credentials kiln login was given: the password (or user
/// name) is wrong, which is what the user must hear, not "authentication required" with a
/// hint to log in.
fn login_failure(registry: &str, e: RegistryError) -> Failure {
    match e {
        RegistryError::Unauthorized { .. } => Failure::user(format!(
            "{registry}: invalid username or password"
        ))
        .hint(Some(
            "check the user name after -u and the password or token piped into --password-stdin"
                .into(),
        )),
        e => e.into(),
    }
}

pub fn logout(globals: &Globals, args: LogoutArgs) -> CmdResult {
    let registry = registry_name(args.registry.as_deref());
    let file = login_file();
    if registry::logout(&file, &registry)? {
        if !globals.quiet {
            eprintln!("removed credentials for {registry} from {}", file.display());
        }
    } else if !globals.quiet {
        eprintln!("not logged in to {registry}");
    }
    Ok(0)
}
