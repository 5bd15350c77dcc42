//! What kiln tells of images and containers for people and scripts (issue 17, section 1),
//! as a docker user reads it: `kiln history` (steps newest first with the size of what
//! each made), the CREATED and SIZE columns of `kiln images` (SIZE as the bytes of the
//! files, docker's meaning; the compressed size in JSON), and `inspect --format`.

mod common;

use common::containers::busybox_image;
use common::Env;

/// A spec on the busybox image whose first step writes 100,000 bytes of zeros, then a
/// small step, then one whose text is longer than the table shows.
const SPEC: &str = r#"
image: hist:1
from: bb
steps:
  - run: head -c 100000 /dev/zero > /zeros
    network: none
  - run: echo small > /small
    network: none
  - run: echo this step has a rather long text that docker would cut in its table > /long
    network: none
"#;

fn built(env: &Env) {
    common::require_root!("namespaces, overlayfs");
    busybox_image(env);
    env.write("app/kiln.yaml", SPEC);
    env.kiln_ok(&["build", env.path("app").to_str().unwrap()]);
}

#[test]
fn history_lists_the_steps_newest_first_with_what_each_made() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    built(&env);
    let table = env.kiln_ok(&["history", "hist:1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE") && lines[0].contains("CREATED BY"),
        "{table}"
    );
    // The image's ID on the newest step, <missing> below, as docker shows it.
    let id = env.kiln_ok(&["images", "-q"]);
    let id = id
        .lines()
        .find(|i| lines[1].starts_with(i))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        lines[2..].iter().all(|l| l.starts_with("<missing>")),
        "{table}"
    );
    assert!(
        lines[1].contains("run: echo this step has a rather long text t…"),
        "{table}"
    );
    assert!(
        lines[3].contains("run: head -c 100000 /dev/zero > /zeros"),
        "{table}"
    );
    assert!(lines[3].contains("100.0 kB"), "{table}");
    assert!(lines.last().unwrap().contains("kiln import bb"), "{table}");
    assert_eq!(lines.len(), 1 + 4, "{table}");

    let whole = env.kiln_ok(&["history", "--no-trunc", id]);
    assert!(whole.contains("would cut in its table > /long"), "{whole}");
    let quiet = env.kiln_ok(&["-q", "history", "hist:1"]);
    assert_eq!(quiet.lines().next(), Some(id), "{quiet}");
    // docker's --format fields.
    let sized = env.kiln_ok(&["history", "--format", "{{.Size}}|{{.CreatedBy}}", "hist:1"]);
    assert_eq!(
        sized.lines().nth(2),
        Some("100.0 kB|run: head -c 100000 /dev/zero > /zeros"),
        "{sized}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["history", "--json", "hist:1"])).unwrap();
    let zeros = &json[2];
    assert_eq!(
        zeros["created_by"],
        "run: head -c 100000 /dev/zero > /zeros"
    );
    assert_eq!(zeros["size"], 100_000);
    let compressed = zeros["compressed_size"].as_u64().unwrap();
    assert!(
        compressed > 0 && compressed < 10_000,
        "zeros compress: {zeros}"
    );
    assert!(zeros["diff_id"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn images_shows_when_an_image_was_made_and_the_bytes_of_its_files() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    built(&env);
    let table = env.kiln_ok(&["images"]);
    let header = table.lines().next().unwrap();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{table}");
    }
    // Builds are reproducible: created is SOURCE_DATE_EPOCH's default, the epoch.
    let row = table.lines().find(|l| l.contains("/hist ")).unwrap();
    assert!(row.contains(" years ago "), "{row}");

    let json: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["images", "--json"])).unwrap();
    let image = json
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().ends_with("/hist:1"))
        .unwrap();
    assert_eq!(image["created"], "1970-01-01T00:00:00Z");
    // SIZE is docker's: what the image's files hold, every layer's, unpacked.
    let history: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["history", "--json", "hist:1"])).unwrap();
    let layers: u64 = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["size"].as_u64().unwrap())
        .sum();
    assert_eq!(image["size"].as_u64(), Some(layers));
    assert!(layers > 100_000);
    // The compressed size (blobs and config) is below it: the zeros and busybox compress.
    assert!(
        image["compressed_size"].as_u64().unwrap() < layers,
        "{image}"
    );
}

#[test]
fn inspect_format_picks_out_what_a_script_needs() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    built(&env);
    let full: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "hist:1"])).unwrap();
    let picked = env.kiln_ok(&[
        "inspect",
        "--format",
        "{{.digest}} {{index .config.rootfs.diff_ids 0}} {{json .names}}",
        "hist:1",
    ]);
    let expected = format!(
        "{} {} {}",
        full["digest"].as_str().unwrap(),
        full["config"]["rootfs"]["diff_ids"][0].as_str().unwrap(),
        serde_json::to_string(&full["names"]).unwrap()
    );
    assert_eq!(picked, expected);

    // A container's, as `docker inspect -f` is used on one.
    env.kiln_ok(&[
        "run",
        "-d",
        "--name",
        "fmt",
        "--network",
        "none",
        "hist:1",
        "sleep",
        "60",
    ]);
    let pid = env.kiln_ok(&["inspect", "-f", "{{.State.Pid}}", "fmt"]);
    let state: serde_json::Value = serde_json::from_str(&env.kiln_ok(&["inspect", "fmt"])).unwrap();
    assert_eq!(pid, state["State"]["Pid"].to_string());
    assert_eq!(
        env.kiln_ok(&["inspect", "-f", "{{.State.Running}} {{.Name}}", "fmt"]),
        "true fmt"
    );
    assert_eq!(
        env.kiln_ok(&["inspect", "-f", "{{.State.NoSuchKey}}", "fmt"]),
        "<no value>"
    );
    // Blocks and functions docker scripts use.
    let template = r#"{{range $i, $a := .Args}}{{if $i}},{{end}}{{$a}}{{end}} {{if eq .State.Status "running"}}up{{else}}down{{end}} {{join .Config.Cmd "+"}}"#;
    assert_eq!(
        env.kiln_ok(&["inspect", "-f", template, "fmt"]),
        "60 up sleep+60"
    );
    env.kiln_ok(&["rm", "-f", "fmt"]);

    // A broken template is the user's mistake: exit 1, named.
    let out = env.kiln(&["inspect", "-f", "{{shout .digest}}", "hist:1"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--format: template: function \"shout\" not defined"),
        "{said}"
    );
}

/// `docker images`' and `docker ps`' `--format` and `docker images NAME`, as scripts use
/// them: docker's field names, `table` for a header, `\t` written as two characters.
#[test]
fn images_and_ps_take_dockers_format_and_images_a_name() {
    common::require_root!("namespaces, cgroups for the container ps lists");
    let env = Env::new();
    busybox_image(&env);
    env.kiln_ok(&["tag", "bb", "bb:2"]);
    env.kiln_ok(&["tag", "bb", "other:1"]);
    let names = env.kiln_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["localhost/bb:2", "localhost/bb:latest", "localhost/other:1"]
    );
    // A name keeps that repository's tags; NAME:TAG only that one.
    let ids = env.kiln_ok(&["images", "bb", "--format", "{{.Tag}} {{.ID}}"]);
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort();
    let id = env.kiln_ok(&["images", "-q"]);
    assert_eq!(ids, [format!("2 {id}"), format!("latest {id}")]);
    assert_eq!(
        env.kiln_ok(&["images", "bb:2", "--format", "{{.Tag}}"]),
        "2"
    );
    assert_eq!(
        env.kiln_ok(&["images", "nothing", "--format", "{{.Tag}}"]),
        ""
    );
    // `table` gives the header row and aligned columns; `\t` is a tab.
    let table = env.kiln_ok(&[
        "images",
        "other",
        "--format",
        r"table {{.Repository}}\t{{.Size}}",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "REPOSITORY        SIZE", "{table}");
    assert!(lines[1].starts_with("localhost/other   "), "{table}");
    // `{{json .}}` is the whole row, with docker's keys.
    let row: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["images", "other", "--format", "{{json .}}"])).unwrap();
    assert_eq!(row["Repository"], "localhost/other");
    assert_eq!(row["ID"], id.as_str());
    assert!(row["Digest"].as_str().unwrap().starts_with("sha256:"));
    // A field the rows lack is named, before anything is printed.
    let out = env.kiln(&["images", "--format", "{{.Repo}}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("can't evaluate field Repo"), "{said}");

    env.kiln_ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "--network",
        "none",
        "bb",
        "sleep",
        "60",
    ]);
    env.kiln_ok(&["run", "--name", "ended", "--network", "none", "bb", "true"]);
    assert_eq!(env.kiln_ok(&["ps", "--format", "{{.Names}}"]), "up");
    let all = env.kiln_ok(&["ps", "-a", "--format", r"table {{.Names}}\t{{.State}}"]);
    let mut lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.remove(0), "NAMES   STATE", "{all}");
    lines.sort();
    assert_eq!(lines, ["ended   exited", "up      running"], "{all}");
    let row: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(row["Image"], "localhost/bb:latest");
    assert!(row["Status"].as_str().unwrap().starts_with("Up "), "{row}");
    env.kiln_ok(&["rm", "-f", "up", "ended"]);
}
