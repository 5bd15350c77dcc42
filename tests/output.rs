//! What kiln shows: a build step's output on a terminal (through a pty, read back as the
//! screen a terminal emulator would show), the failing step's output under `-q` and
//! `--json`, and docker's `-q` for `kiln images` and `kiln ps`. Every command runs from a
//! project folder with relative paths, as a user types it.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;

use common::{text, Env};

/// A project folder `proj` holding a busybox root filesystem (`base`) and `kiln.yaml`
/// whose one step runs `script`.
fn project(env: &Env, script: &str) -> PathBuf {
    common::busybox_rootfs(env, "proj/base");
    let spec = format!(
        "image: out\nfrom: rootfs:./base\nsteps:\n  - run: |\n{}",
        script
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    env.write("proj/kiln.yaml", &spec);
    env.path("proj")
}

const ROWS: u16 = 60;
const COLS: u16 = 100;

/// Runs kiln in `dir` with its stderr on a pty of [`ROWS`]×[`COLS`], and returns its exit
/// code and the final screen, one string per row with trailing blanks cut.
fn on_terminal(env: &Env, dir: &std::path::Path, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let size = nix::pty::Winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut cmd = env.command();
    cmd.current_dir(dir)
        .args(args)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    let mut child = cmd.spawn().unwrap();
    // Only the child may hold the terminal, so reading it ends when the child does.
    drop(cmd);
    drop(pty.slave);
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(pty.master);
        let mut all = Vec::new();
        let mut buf = [0; 4096];
        // EIO once the child's side is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let status = child.wait().unwrap();
    let written = reader.join().unwrap();
    let mut screen = vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0);
    screen.process(&written);
    // Row by row: a line that fills the width continues on the next row.
    let rows = screen
        .screen()
        .rows(0, COLS)
        .map(|row| row.trim_end().to_owned())
        .collect();
    (status.code(), rows)
}

/// What dpkg, pip and curl print: progress rewritten with `\r`, `\r\n` line ends, a last
/// `\r` with no newline, colours, a tab, a line wider than the terminal.
const PROGRESS_SCRIPT: &str = r#"echo first line
printf 'progress 10%%\r'; sleep 0.3; printf 'progress 50%%\r'; sleep 0.3; printf 'progress 100%%\n'
printf 'unpacking 1\runpacking 2\r\n'
printf 'tab\there\n'
printf '\033[31mcoloured\033[0m\n'
printf 'download 0%%\r' >&2; sleep 0.3; printf 'download 100%%\r' >&2
printf 'wide-%.0s' $(seq 30); echo
echo last line"#;

#[test]
fn carriage_return_progress_leaves_every_line_once_and_no_spinner() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env, PROGRESS_SCRIPT);
    let (code, screen) = on_terminal(&env, &dir, &["build"]);
    let shown = screen.join("\n");
    assert_eq!(code, Some(0), "{shown}");
    let wide = format!("[1/1] | {}", "wide-".repeat(30));
    // The wide line wraps: its two rows, joined, are the line.
    let rows_joined = screen
        .windows(2)
        .map(|w| format!("{}{}", w[0], w[1]))
        .filter(|two| *two == wide)
        .count();
    assert_eq!(rows_joined, 1, "the wide line is not there once:\n{shown}");
    for line in [
        "[1/1] | first line",
        "[1/1] | progress 100%",
        "[1/1] | unpacking 2",
        "[1/1] | tab     here",
        "[1/1] | coloured",
        "[1/1] ! download 100%",
        "[1/1] | last line",
    ] {
        let times = screen.iter().filter(|row| *row == line).count();
        assert_eq!(
            times, 1,
            "{line:?} is on the screen {times} times:\n{shown}"
        );
    }
    for stale in ["progress 10%", "progress 50%", "unpacking 1", "download 0%"] {
        assert!(!shown.contains(stale), "{stale:?} was left over:\n{shown}");
    }
    // The spinner's line (`⠁ [1/1] run: echo first line… (no cached layer) 1s`) is gone:
    // the step's title is on the screen once, on its result line.
    let titles: Vec<&String> = screen.iter().filter(|r| r.contains("run: echo")).collect();
    assert_eq!(titles.len(), 1, "{shown}");
    assert!(titles[0].contains("ran in"), "{shown}");
    assert!(
        !shown.contains(['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈']),
        "{shown}"
    );
    assert!(
        screen
            .iter()
            .any(|r| r.starts_with("built localhost/out:latest")),
        "{shown}"
    );
}

/// A failing step on a terminal leaves no spinner behind either.
#[test]
fn a_failing_step_on_a_terminal_leaves_its_output_and_no_spinner() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env, "printf 'fetching 1\\r'; sleep 0.3; printf 'fetching 2\\r'; sleep 0.3\necho broken >&2\nexit 4");
    let (code, screen) = on_terminal(&env, &dir, &["build"]);
    let shown = screen.join("\n");
    assert_eq!(code, Some(4), "{shown}");
    assert_eq!(
        screen.iter().filter(|r| *r == "[1/1] ! broken").count(),
        1,
        "{shown}"
    );
    assert_eq!(
        screen.iter().filter(|r| *r == "[1/1] | fetching 2").count(),
        1,
        "{shown}"
    );
    assert!(
        !screen.iter().any(|r| r.contains("| fetching 1")),
        "{shown}"
    );
    assert!(
        !shown.contains(['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈']),
        "{shown}"
    );
    assert!(shown.contains("error: kiln.yaml:4:5: step 1"), "{shown}");
}

/// A step that prints 80 lines, one on stderr, and fails with 3.
const FAILING_SCRIPT: &str =
    "for i in $(seq 1 80); do echo \"out $i\"; done\necho 'it broke' >&2\nexit 3";

#[test]
fn quiet_build_shows_the_failing_steps_last_lines_on_stderr() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env, FAILING_SCRIPT);
    let out = env
        .command()
        .current_dir(&dir)
        .args(["build", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.contains(&"[1/1] ! it broke"), "{err}");
    // The last 50 lines of each stream: stdout and stderr come through separate pipes,
    // so the error message is kept whatever stdout printed after it.
    for i in 31..=80 {
        assert!(
            lines.contains(&format!("[1/1] | out {i}").as_str()),
            "out {i}: {err}"
        );
    }
    assert!(
        !lines.contains(&"[1/1] | out 30"),
        "more than 50 lines: {err}"
    );
    assert!(err.contains("30 earlier lines not shown"), "{err}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("error: kiln.yaml:4:5: step 1 (run: for i in"),
        "{err}"
    );
    assert!(
        lines.last().unwrap().ends_with("failed: exit code 3"),
        "{err}"
    );
}

#[test]
fn json_build_puts_the_failing_steps_last_lines_in_the_error_object() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env, FAILING_SCRIPT);
    let out = env
        .command()
        .current_dir(&dir)
        .args(["build", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON object");
    let error = &json["error"];
    assert_eq!(error["exit_code"], 3, "{json}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .ends_with("failed: exit code 3"),
        "{json}"
    );
    let step = &error["steps"][0];
    assert_eq!(step["step"], 1, "{json}");
    assert_eq!(step["lines"], 81, "{json}");
    let output = step["output"].as_array().unwrap();
    assert_eq!(output.len(), 51, "{json}");
    assert!(output.contains(&serde_json::json!({"stream": "stderr", "line": "it broke"})));
    assert!(output.contains(&serde_json::json!({"stream": "stdout", "line": "out 80"})));
    // The error is on stderr too, for a person watching.
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: kiln.yaml:4:5:"));
}

#[test]
fn images_and_ps_quiet_print_only_ids_and_build_arg_is_an_alias() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env, "echo ${GREETING} > /greeting");
    let spec = std::fs::read_to_string(dir.join("kiln.yaml")).unwrap();
    std::fs::write(
        dir.join("kiln.yaml"),
        spec.replace("from:", "args: { GREETING: hi }\nfrom:"),
    )
    .unwrap();
    let kiln = |args: &[&str]| {
        let out = env.command().current_dir(&dir).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let digest = kiln(&["build", "-q", "--build-arg", "GREETING=hello"]);
    kiln(&["tag", "out", "out:2"]);
    let id = &digest.trim().strip_prefix("sha256:").unwrap()[..12];
    // One ID per image, however many names it has.
    assert_eq!(kiln(&["images", "-q"]), format!("{id}\n"));
    assert_eq!(kiln(&["-q", "images"]), format!("{id}\n"));
    assert_eq!(kiln(&["run", "--rm", "out", "cat", "/greeting"]), "hello\n");

    assert_eq!(kiln(&["ps", "-q"]), "");
    kiln(&["run", "--name", "one", "out", "true"]);
    kiln(&["run", "--name", "two", "out", "true"]);
    let ids = kiln(&["ps", "-aq"]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids
        .iter()
        .all(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    let table = kiln(&["ps", "-a"]);
    assert!(ids.iter().all(|id| table.contains(id)), "{table}");
}
