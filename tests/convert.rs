//! `kiln convert`: realistic Dockerfiles (tests/convert/*/Dockerfile, each in its project
//! folder) converted as a user does it (`cd app && kiln convert Dockerfile -o kiln.yaml &&
//! kiln build`), built, and run; what the image does and has is held to what the
//! Dockerfile says docker's would do (written out in each test). The reporting and the
//! command line's rules need no root and run in the root-free tier too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, text, Env};

/// The test projects: each a folder with a Dockerfile and the files it copies.
const PROJECTS: [&str; 8] = [
    "web-app",
    "heredoc",
    "entrypoint",
    "permissions",
    "unsupported",
    "escape",
    "multi-stage",
    "args-env",
];

fn data(project: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/convert")
        .join(project)
}

/// The project copied into the env (so the spec is written beside the Dockerfile as a
/// user's would be), with what a test cannot keep in git made here.
fn project(env: &Env, name: &str) -> PathBuf {
    let dir = env.path(name);
    run(Command::new("cp").arg("-r").arg(data(name)).arg(&dir));
    if name == "permissions" {
        std::fs::create_dir_all(env.path("payload")).unwrap();
        std::fs::write(env.path("payload/unpacked.txt"), "unpacked by ADD\n").unwrap();
        run(Command::new("tar")
            .arg("-czf")
            .arg(dir.join("files.tar.gz"))
            .arg("-C")
            .arg(env.path("payload"))
            .arg("unpacked.txt"));
    }
    dir
}

fn convert(env: &Env, name: &str, extra: &[&str]) -> std::process::Output {
    project(env, name);
    let mut args = vec!["convert", "Dockerfile"];
    args.extend_from_slice(extra);
    env.kiln_in(name, &args)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_project_converts_to_a_spec_that_loads() {
    let env = Env::unprivileged();
    for name in PROJECTS {
        let out = convert(&env, name, &["-o", "kiln.yaml"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let spec = std::fs::read_to_string(env.path(name).join("kiln.yaml")).unwrap();
        assert!(spec.starts_with("# Converted from Dockerfile"), "{spec}");
    }
}

#[test]
fn what_has_no_kiln_equivalent_is_reported_with_its_line() {
    let env = Env::unprivileged();
    let out = convert(&env, "unsupported", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    for line in [
        "warning: Dockerfile:2: ONBUILD has no kiln equivalent (",
        "warning: Dockerfile:3: ADD of a URL has no kiln equivalent (",
        "warning: Dockerfile:4: COPY *.txt: kiln's copy takes no wildcards (",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    let spec = stdout(&out);
    assert!(spec.contains("# TODO Dockerfile:2: ONBUILD"), "{spec}");
    assert!(
        spec.contains("#     ADD https://example.com/file.txt /tmp/"),
        "{spec}"
    );
    assert!(spec.contains("- run: \"echo ok > /ok\""), "{spec}");

    // --strict: the same warnings, exit 1, nothing written.
    let out = env.kiln_in("unsupported", &["convert", "--strict", "-o", "kiln.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("Dockerfile:2: ONBUILD"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("(--strict)"), "{}", text(&out));
    assert!(!env.path("unsupported/kiln.yaml").exists());
    // A Dockerfile that translates exactly passes --strict.
    let out = convert(&env, "entrypoint", &["--strict"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_existing_spec_is_kept_unless_forced() {
    let env = Env::unprivileged();
    project(&env, "entrypoint");
    env.write("entrypoint/kiln.yaml", "mine\n");
    let out = env.kiln_in("entrypoint", &["convert", "-o", "kiln.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("kiln.yaml: exists"), "{}", text(&out));
    assert!(
        stderr(&out).contains("hint: give --force"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(env.path("entrypoint/kiln.yaml")).unwrap(),
        "mine\n"
    );
    let out = env.kiln_in(
        "entrypoint",
        &["convert", "-o", "kiln.yaml", "--force", "-t", "ep"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let spec = std::fs::read_to_string(env.path("entrypoint/kiln.yaml")).unwrap();
    assert!(spec.contains("\nimage: ep\n"), "{spec}");
}

#[test]
fn a_broken_dockerfile_is_an_error_at_its_line() {
    let env = Env::unprivileged();
    env.write("bad/Dockerfile", "FROM busybox\nRUNN echo hi\n");
    let out = env.kiln_in("bad", &["convert"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out)
            .contains("error: Dockerfile:2: unknown instruction \"RUNN\"\nhint: did you mean RUN?"),
        "{}",
        text(&out)
    );
    env.write(
        "bad/Dockerfile",
        "FROM busybox\nRUN <<EOF\necho never closed\n",
    );
    let out = env.kiln_in("bad", &["convert"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("Dockerfile:2: heredoc <<EOF is not closed"),
        "{}",
        text(&out)
    );
    let out = env.kiln_in("bad", &["convert", "missing"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("missing: cannot read it"),
        "{}",
        text(&out)
    );
    // A command line clap refuses: 2.
    assert_eq!(env.kiln(&["convert", "--bogus"]).status.code(), Some(2));
}

#[test]
fn translations_follow_the_docs_table() {
    let env = Env::unprivileged();
    let spec = stdout(&convert(&env, "web-app", &[]));
    for want in [
        "args:\n  BASE: busybox\n  APP_VERSION: \"1.4.2\"\n",
        "env:\n  APP_HOME: /srv/app\n  APP_PORT: \"8080\"\n",
        "from: \"${BASE}\"\n",
        "  - workdir: \"${APP_HOME}\"\n",
        "  - copy: site/\n    to: ./www/\n    owner: \"65534:65534\"\n",
        "  - user: \"65534:65534\"\n",
        "  expose: [\"${APP_PORT}/tcp\"]\n",
        "    retries: 2\n",
        "# kiln build reads .dockerignore of the build context",
    ] {
        assert!(spec.contains(want), "missing {want:?} in:\n{spec}");
    }
    let spec = stdout(&convert(&env, "multi-stage", &[]));
    assert!(
        spec.contains("  image-busybox:\n    from: busybox\n"),
        "{spec}"
    );
    assert!(
        spec.contains("        from: build\n        to: /report.txt\n"),
        "{spec}"
    );
    let spec = stdout(&convert(&env, "permissions", &[]));
    assert!(
        spec.contains("  unpack-files.tar.gz:\n    from: rootfs:files.tar.gz\n"),
        "{spec}"
    );
}

/// Converts the Dockerfile `text` written into folder `dir` of the env, to stdout.
fn convert_text(env: &Env, dir: &str, text: &[u8]) -> std::process::Output {
    std::fs::create_dir_all(env.path(dir)).unwrap();
    std::fs::write(env.path(dir).join("Dockerfile"), text).unwrap();
    env.kiln_in(dir, &["convert", "Dockerfile"])
}

#[test]
fn docker_s_scope_rules_are_kept_or_warned_about() {
    let env = Env::unprivileged();
    // A byte order mark and CRLF line ends (an editor on Windows), one ENV name set twice
    // before any step, one ENV using another's earlier value, unquoted non-ASCII text.
    let out = convert_text(
        &env,
        "crlf",
        "\u{feff}from busybox\r\nENV A=1\r\nENV A=2 B=$A\r\nRUN echo héllo > /x\r\n".as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let spec = stdout(&out);
    assert!(spec.contains("env:\n  A: \"1\"\nfrom: busybox\n"), "{spec}");
    assert!(
        spec.contains("  - env:\n      B: \"${A}\"\n      A: \"2\"\n"),
        "B is the A of before the ENV, as in Docker:\n{spec}"
    );
    assert!(spec.contains("- run: \"echo héllo > /x\""), "{spec}");

    // An ARG of another stage, stage defaults that differ, values that use each other's.
    let dockerfile = "ARG VERSION=1\nFROM busybox AS a\nARG MODE=fast\nRUN echo $VERSION\n\
                      FROM busybox\nARG MODE=slow\nENV X=$Y Y=$X\nEXPOSE 80/tcp 8COPY\n";
    let out = convert_text(&env, "scope", dockerfile.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    for want in [
        "warning: Dockerfile:4: RUN uses $VERSION, an ARG that this stage does not declare (",
        "warning: Dockerfile:6: ARG MODE is \"slow\" here for Docker, \"fast\" in the spec (",
        "warning: Dockerfile:7: the values of this ENV use each other's earlier values (",
        "warning: Dockerfile:8: EXPOSE 8COPY: not a port (",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // The stage's own ARG reaches its RUN's environment without being named.
    let spec = stdout(&out);
    assert!(
        spec.contains("- run: |-\n          : \"$MODE\"\n          echo $VERSION\n"),
        "{spec}"
    );
}

#[test]
fn hostile_dockerfiles_are_one_clear_error() {
    let env = Env::unprivileged();
    let refused = |dir: &str, text: &[u8], want: &str| {
        let out = convert_text(&env, dir, text);
        assert_eq!(out.status.code(), Some(1), "{dir}: {}", text_of(&out));
        assert!(stderr(&out).contains(want), "{dir}: {}", text_of(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{dir}: {}",
            text_of(&out)
        );
    };
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    refused("garbage", &garbage, "error: Dockerfile:");
    refused("garbage", &garbage, "not UTF-8 text");
    // Read no further than 4 MiB: this is 100 MB.
    let mut huge = b"FROM busybox\n".to_vec();
    huge.resize(100 << 20, b'#');
    refused("huge", &huge, "larger than 4 MiB");
    // Under 4 MiB, but more than a spec holds.
    let big = format!(
        "FROM busybox\n{}",
        "RUN echo a-long-enough-command\n".repeat(60_000)
    );
    refused(
        "big",
        big.as_bytes(),
        "Dockerfile: too large to be one kiln spec",
    );

    // 10,000 deep: a continuation, and as many heredocs on one RUN, convert as they are.
    let continued = format!("FROM busybox\nRUN true{}\n", " \\\n && true".repeat(10_000));
    let out = convert_text(&env, "continued", continued.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    let markers: Vec<String> = (0..10_000).map(|n| format!("cat <<E{n}")).collect();
    let bodies: String = (0..10_000).map(|n| format!("x\nE{n}\n")).collect();
    let heredocs = format!("FROM busybox\nRUN {}\n{bodies}", markers.join(" && "));
    let out = convert_text(&env, "heredocs", heredocs.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}

// ---- built and run: the image behaves as docker's would ----

/// Converts and builds a project as a user does, in its folder, tagged `name`.
fn build(env: &Env, name: &str) {
    let out = convert(env, name, &["-o", "kiln.yaml"]);
    assert!(out.status.success(), "convert {name}: {}", text(&out));
    let out = env.kiln_in(name, &["build", "-t", name]);
    assert!(
        out.status.success(),
        "build {name}: {}\nspec:\n{}",
        text(&out),
        std::fs::read_to_string(env.path(name).join("kiln.yaml")).unwrap()
    );
}

fn kiln_run(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend_from_slice(args);
    env.kiln_ok(&all)
}

fn base(env: &Env) {
    common::containers::busybox_image(env);
    env.kiln_ok(&["tag", "bb", "busybox"]);
}

#[test]
fn the_web_app_runs_as_its_user_in_its_workdir_with_its_config() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "web-app");
    let shown = kiln_run(
        &env,
        &[
            "web-app",
            "sh",
            "-c",
            "id -u; id -g; pwd; cat www/version.txt; ls www; echo $APP_PORT",
        ],
    );
    assert_eq!(
        shown, "65534\n65534\n/srv/app\nversion 1.4.2\nindex.html\nversion.txt\n8080",
        "secret.txt is in .dockerignore, so it is not copied"
    );
    let owner = kiln_run(&env, &["web-app", "stat", "-c", "%u:%g", "www/index.html"]);
    assert_eq!(owner, "65534:65534");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "web-app"])).unwrap();
    let config = &inspect["config"]["config"];
    assert_eq!(config["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["User"], "65534:65534");
    assert_eq!(config["WorkingDir"], "/srv/app");
    assert_eq!(config["StopSignal"], "SIGINT");
    assert_eq!(config["Labels"]["version"], "1.4.2");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "web app"
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "8080", "-h", "www"])
    );
    let health = &config["Healthcheck"];
    assert_eq!(
        health["Test"],
        serde_json::json!([
            "CMD-SHELL",
            "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"
        ])
    );
    assert_eq!(health["Interval"], 5_000_000_000u64);
    assert_eq!(health["Timeout"], 2_000_000_000u64);
    assert_eq!(health["Retries"], 2);
    // --arg overrides the ARG's default, as docker build --build-arg does.
    let out = env.kiln_in(
        "web-app",
        &["build", "-t", "web-app:2", "--arg", "APP_VERSION=2.0"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        kiln_run(&env, &["web-app:2", "cat", "www/version.txt"]),
        "version 2.0"
    );
}

#[test]
fn a_stage_s_args_reach_its_runs_and_env_sees_earlier_values() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "args-env");
    // configure.sh reads RELEASE and APP_ENV from its environment, named nowhere in RUN.
    let expected = "release=1.0 env=production tools=/opt/tools/v2 old=/opt/tools";
    assert_eq!(kiln_run(&env, &["args-env"]), expected);
    assert_eq!(
        kiln_run(
            &env,
            &["args-env", "sh", "-c", "id -u; pwd; echo $GREETING"]
        ),
        "65534\n/srv\nhello from /opt/tools/v2",
        "the final stage has the first one's user, workdir and ENV"
    );
    // --arg overrides the ARG before FROM and its redeclaration, as --build-arg does.
    let out = env.kiln_in(
        "args-env",
        &["build", "-t", "args-env:2", "--arg", "RELEASE=2.5"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        kiln_run(&env, &["args-env:2"]),
        expected.replace("release=1.0", "release=2.5")
    );
}

#[test]
fn heredocs_run_as_docker_runs_them() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "heredoc");
    // The quoted 'END' keeps $USER as text; <<- strips the tab.
    assert_eq!(
        kiln_run(&env, &["heredoc"]),
        "one\nHello $USER\nwritten\nhi there"
    );
}

#[test]
fn exec_form_entrypoint_and_cmd_combine_as_in_docker() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "entrypoint");
    // Exec form: no variable is expanded, by docker or by kiln.
    assert_eq!(kiln_run(&env, &["entrypoint"]), "entry: default $MESSAGE");
    assert_eq!(kiln_run(&env, &["entrypoint", "given"]), "entry: given");
    let env_line = kiln_run(
        &env,
        &["--entrypoint", "sh", "entrypoint", "-c", "echo $MESSAGE"],
    );
    assert_eq!(env_line, "from the image");
}

#[test]
fn chown_chmod_and_an_added_archive_give_docker_s_files() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "permissions");
    assert_eq!(
        kiln_run(&env, &["permissions"]),
        "640 1000:1000 /etc/app/config.ini\n755 0:0 /usr/local/bin/run\n\
         644 65534:65534 /data/x.txt\nunpacked by ADD"
    );
}

#[test]
fn escape_directive_and_continuations_build_the_same_commands() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "escape");
    assert_eq!(
        kiln_run(&env, &["escape"]),
        "hello world from kiln: one two in /tmp/sub"
    );
}

#[test]
fn a_multi_stage_build_copies_from_a_stage_and_an_image() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    build(&env, "multi-stage");
    assert_eq!(kiln_run(&env, &["multi-stage"]), "built from 2 files");
    // Only the final stage is the image: busybox and the report, nothing of the build.
    let listing = kiln_run(
        &env,
        &["--entrypoint", "/bin/busybox", "multi-stage", "ls", "/"],
    );
    assert!(!listing.contains("src"), "{listing}");
}

// ---- the peer: the same Dockerfile built by buildah, run side by side ----

/// buildah with a store of its own under the env (vfs, chroot isolation: nothing of the
/// host's container storage is touched), its `busybox` the test's own busybox image.
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn new(env: &Env) -> Buildah {
        common::require("buildah", "buildah");
        common::require("skopeo", "skopeo");
        let buildah = Buildah {
            root: env.path("buildah/root"),
            runroot: env.path("buildah/runroot"),
        };
        // kiln's store is an OCI layout: its busybox becomes docker.io/library/busybox.
        let storage = format!(
            "containers-storage:[vfs@{}+{}]docker.io/library/busybox:latest",
            buildah.root.display(),
            buildah.runroot.display()
        );
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!(
                "oci:{}:localhost/busybox:latest",
                env.root().display()
            ))
            .arg(storage));
        buildah
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    /// Builds the project's Dockerfile and loads the image into kiln's store as
    /// `docker-NAME`, so both images run under the same runtime.
    fn build_into_kiln(&self, env: &Env, name: &str) {
        let tag = format!("docker-{name}");
        // Docker's image format keeps HEALTHCHECK, which OCI's has no field for; it also
        // writes an unset USER as "", which kiln run refuses (so: only where needed).
        let dockerfile = std::fs::read_to_string(env.path(name).join("Dockerfile")).unwrap();
        let format = match dockerfile.contains("HEALTHCHECK") {
            true => "docker",
            false => "oci",
        };
        // buildah 1.28 knows no --link (an optimisation, not a change to the files).
        let peer_file = env.path(name).join("Dockerfile.buildah");
        std::fs::write(&peer_file, dockerfile.replace("--link ", "")).unwrap();
        run(self
            .command()
            .current_dir(env.path(name))
            .args(["bud", "--isolation", "chroot", "--pull-never", "-q"])
            .args([
                "--format",
                format,
                "-f",
                "Dockerfile.buildah",
                "-t",
                &tag,
                ".",
            ]));
        let archive = env.path(&format!("{tag}.tar"));
        run(self
            .command()
            .arg("push")
            .arg(&tag)
            .arg(format!("{format}-archive:{}:{tag}", archive.display())));
        env.kiln_ok(&["load", "-i", archive.to_str().unwrap()]);
    }
}

/// What a container shows of itself (output, user, workdir, environment) and what its
/// image config says, for one image.
fn behaviour(env: &Env, image: &str, commands: &[&[&str]]) -> Vec<String> {
    let mut seen: Vec<String> = commands
        .iter()
        .map(|args| {
            let mut all = vec![image];
            all.extend_from_slice(args);
            kiln_run(env, &all)
        })
        .collect();
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", image])).unwrap();
    let config = &inspect["config"]["config"];
    for key in [
        "Entrypoint",
        "Cmd",
        "User",
        "WorkingDir",
        "ExposedPorts",
        "StopSignal",
        "Volumes",
    ] {
        // Docker's format writes an unset entrypoint as [], OCI's leaves it out.
        let value = match &config[key] {
            serde_json::Value::Array(a) if a.is_empty() => &serde_json::Value::Null,
            value => value,
        };
        seen.push(format!("{key}: {value}"));
    }
    let health = &config["Healthcheck"];
    seen.push(format!(
        "Healthcheck: {} {} {}",
        health["Test"], health["Interval"], health["Retries"]
    ));
    let labels = &config["Labels"];
    seen.push(format!(
        "Labels: {} {}",
        labels["version"], labels["org.opencontainers.image.title"]
    ));
    seen
}

#[test]
fn converted_specs_build_what_buildah_builds_from_the_dockerfile() {
    common::require_root!("builds and runs images");
    let env = Env::new();
    base(&env);
    let buildah = Buildah::new(&env);
    // buildah 1.28 (Debian 12) has no heredocs: that project is held to written
    // expectations above instead.
    let shell_view: &[&str] = &[
        "sh",
        "-c",
        "id; pwd; env | grep -v -e HOSTNAME -e HOME | sort",
    ];
    let cases: [(&str, Vec<&[&str]>); 6] = [
        (
            "web-app",
            vec![shell_view, &["sh", "-c", "stat -c '%a %u:%g %n' www/*"]],
        ),
        ("entrypoint", vec![&[], &["given", "args"]]),
        ("permissions", vec![&[]]),
        ("escape", vec![&[], shell_view]),
        ("multi-stage", vec![&[]]),
        ("args-env", vec![&[], shell_view]),
    ];
    for (name, commands) in cases {
        build(&env, name);
        buildah.build_into_kiln(&env, name);
        let ours = behaviour(&env, name, &commands);
        let theirs = behaviour(&env, &format!("docker-{name}"), &commands);
        assert_eq!(
            ours, theirs,
            "{name}: kiln's image (left) and buildah's (right) differ"
        );
    }
}
