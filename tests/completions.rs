//! Shell completions and man pages (issue 17, section 6), tried as a user does: the bash
//! script is sourced and asked to complete what a user types, zsh and fish check their
//! scripts, and the man pages render with `man` itself.

mod common;

use std::process::Command;

use common::{require, run, text, Env};

/// `kiln completions SHELL`, which needs neither root nor a store.
fn script(env: &Env, shell: &str) -> String {
    let out = env.kiln(&["completions", shell]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's completion function offers for the words typed so far (the last one being
/// completed), called as bash calls it: the command, the word, the word before.
fn bash_completes(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _kiln kiln '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_path.display(),
        quoted.join(" "),
        words.len() - 1
    );
    run(Command::new("bash").args(["--norc", "-c", &program]))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags_from_the_real_command_line() {
    require("bash", "bash");
    let env = Env::unprivileged();
    let path = env.write("kiln.bash", &script(&env, "bash"));
    let commands = bash_completes(&path, &["kiln", "ru"]);
    assert_eq!(commands, ["run"], "{commands:?}");
    let flags = bash_completes(&path, &["kiln", "run", "--user"]);
    assert!(flags.contains(&"--userns".to_owned()), "{flags:?}");
    assert!(flags.contains(&"--user".to_owned()), "{flags:?}");
    let network = bash_completes(&path, &["kiln", "network", "cr"]);
    assert_eq!(network, ["create"], "{network:?}");
    // Hidden commands (kiln's own helpers) are never offered.
    let all = bash_completes(&path, &["kiln", ""]);
    assert!(all.contains(&"build".to_owned()), "{all:?}");
    assert!(
        !all.iter()
            .any(|c| c.contains("monitor") || c.contains("network-dns")),
        "{all:?}"
    );
}

#[test]
fn zsh_and_fish_accept_their_scripts() {
    require("zsh", "zsh");
    require("fish", "fish");
    let env = Env::unprivileged();
    let zsh = env.write("_kiln", &script(&env, "zsh"));
    run(Command::new("zsh").arg("-n").arg(&zsh));
    let text = std::fs::read_to_string(&zsh).unwrap();
    assert!(
        text.contains("--userns") && text.contains("'build:"),
        "{text}"
    );
    let fish = env.write("kiln.fish", &script(&env, "fish"));
    run(Command::new("fish").arg("--no-execute").arg(&fish));
    // fish loads it and lists kiln's commands for `kiln <TAB>`.
    let offered = run(Command::new("fish").args([
        "--no-config",
        "-c",
        &format!("source {}; complete -C 'kiln '", fish.display()),
    ]));
    for command in ["build", "run", "push", "completions"] {
        assert!(
            offered.lines().any(|l| l.starts_with(command)),
            "{command}: {offered}"
        );
    }
}

#[test]
fn man_pages_are_written_for_every_command_and_render() {
    require("man", "man-db");
    let env = Env::unprivileged();
    let dir = env.path("man");
    let out = env.kiln(&["man", "-o", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for page in [
        "kiln.1",
        "kiln-run.1",
        "kiln-build.1",
        "kiln-network-create.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing");
    }
    assert!(!dir.join("kiln-container-monitor.1").exists());
    let rendered = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(dir.join("kiln-run.1"))
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    // Without a terminal man still overstrikes bold text (`k\x08k`): keep what is read.
    let mut page = String::new();
    for c in String::from_utf8_lossy(&rendered.stdout).chars() {
        match c {
            '\x08' => {
                page.pop();
            }
            c => page.push(c),
        }
    }
    assert!(rendered.status.success(), "{}", text(&rendered));
    assert!(page.contains("kiln-run"), "{page}");
    assert!(page.contains("--userns"), "{page}");
    assert!(page.contains("--memory"), "{page}");
    // A command's examples are in its page, as in its --help.
    let network = run(Command::new("man")
        .arg("-l")
        .arg(dir.join("kiln-network.1"))
        .env("MANWIDTH", "100"));
    assert!(network.contains("kiln network create web"), "{network}");
}
