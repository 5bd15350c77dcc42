//! `kiln completions SHELL` and `kiln man`: what shells and `man` need to know of kiln's
//! command line, generated from the same clap definition that parses it, so they can
//! never list a flag kiln does not have.

use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CmdResult, Failure};

/// The shells `kiln completions` writes a script for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(
    about = "Print a shell completion script",
    after_help = "Examples:\n  kiln completions bash > /etc/bash_completion.d/kiln\n  kiln completions zsh > \"${fpath[1]}/_kiln\"\n  kiln completions fish > ~/.config/fish/completions/kiln.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete in
    shell: Shell,
}

#[derive(Args, Debug)]
#[command(
    about = "Write man pages: kiln(1) and one per command (kiln-run(1), …)",
    after_help = "Examples:\n  kiln man -o /usr/local/share/man/man1 && man kiln-run"
)]
pub struct ManArgs {
    /// The directory to write the pages to (made when missing)
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> CmdResult {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = visible(&Cli::command());
    clap_complete::generate(shell, &mut command, "kiln", &mut std::io::stdout());
    Ok(0)
}

/// `command` without its hidden subcommands (kiln's own helpers: a detached container's
/// monitor, the network reclaimer, …), at every level; clap's generators would offer them.
fn visible(command: &clap::Command) -> clap::Command {
    let mut copy = clap::Command::new(command.get_name().to_owned())
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(visible),
        );
    if let Some(about) = command.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(about) = command.get_long_about() {
        copy = copy.long_about(about.clone());
    }
    if let Some(examples) = command.get_after_help() {
        copy = copy.after_help(examples.clone());
    }
    if let Some(version) = command.get_version() {
        copy = copy.version(version.to_owned());
    }
    copy
}

/// Writes `kiln.1` and `kiln-COMMAND.1` for every command that is not hidden (and
/// `kiln-network-create.1` … for the network commands).
pub fn man(args: ManArgs) -> CmdResult {
    let failed = |what: String| move |e: std::io::Error| Failure::user(format!("{what}: {e}"));
    std::fs::create_dir_all(&args.out).map_err(failed(format!("create {}", args.out.display())))?;
    let mut written = 0;
    let mut pages = vec![(String::from("kiln"), visible(&Cli::command()))];
    while let Some((name, command)) = pages.pop() {
        for sub in command.get_subcommands() {
            pages.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let path = args.out.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone().name(name.clone()))
            .render(&mut page)
            .map_err(failed(format!("render {name}")))?;
        std::fs::write(&path, page).map_err(failed(format!("write {}", path.display())))?;
        written += 1;
    }
    eprintln!("wrote {written} man pages to {}", args.out.display());
    Ok(0)
}
