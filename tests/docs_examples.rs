//! Every ```yaml example of README.md, specs/spec.md and docs/coming-from-docker.md is a spec that builds, as a user
//! would build it: written as `kiln.yaml` into a project folder of its own, with the files,
//! contexts, secrets and base images it names made by the test, and `kiln build` run in
//! that folder.
//!
//! Two comments on an example's first line speak to this test (and to the reader):
//! - `# fragment: WHY` marks a snippet that is not a whole spec; it is only checked to be
//!   YAML. There are few, each saying why: a step that needs a network mirror, kiln's config
//!   file.
//! - `# kiln build ARGS...` is how the example is built (e.g. an arg without a default).
//!
//! Base images named by `from:` are the test's busybox image under that name, so examples
//! use small realistic bases (`busybox`, `busybox:1.36`) and build without a registry.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{text, Env};
use kiln_spec::{CopyFrom, From, SecretSource, Spec, StepKind};

/// The documents whose examples must build, relative to the crate root.
const DOCS: [&str; 3] = ["README.md", "specs/spec.md", "docs/coming-from-docker.md"];

/// One fenced ```yaml block.
struct Example {
    /// `README.md:17`: the document and the line of the opening fence.
    place: String,
    text: String,
}

/// What an example's first line says it is.
enum Kind {
    Fragment(String),
    Spec { build_args: Vec<String> },
}

fn examples() -> Vec<Example> {
    let mut found = Vec::new();
    for doc in DOCS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
        let content = std::fs::read_to_string(&path).unwrap();
        let mut open: Option<(usize, String)> = None;
        for (index, line) in content.lines().enumerate() {
            match &mut open {
                None if line.trim_end() == "```yaml" => open = Some((index + 1, String::new())),
                None => {}
                Some((start, text)) if line.trim_end() == "```" => {
                    found.push(Example {
                        place: format!("{doc}:{start}"),
                        text: std::mem::take(text),
                    });
                    open = None;
                }
                Some((_, text)) => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        assert!(open.is_none(), "{doc}: a ```yaml block is not closed");
    }
    found
}

fn kind(example: &Example) -> Kind {
    let first = example.text.lines().next().unwrap_or_default();
    if let Some(why) = first.strip_prefix("# fragment") {
        return Kind::Fragment(why.trim_start_matches(':').trim().to_owned());
    }
    let build_args = match first.strip_prefix("# kiln build") {
        Some(args) => args.split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    Kind::Spec { build_args }
}

#[test]
fn the_docs_have_examples_and_few_fragments_each_saying_why() {
    let examples = examples();
    assert!(
        examples.len() >= 12,
        "found only {} examples",
        examples.len()
    );
    let mut fragments = 0;
    for example in &examples {
        if let Kind::Fragment(why) = kind(example) {
            fragments += 1;
            assert!(
                !why.is_empty(),
                "{}: say why the example is a fragment: `# fragment: WHY`",
                example.place
            );
            let parsed: Result<serde_json::Value, _> = serde_saphyr::from_str(&example.text);
            assert!(parsed.is_ok(), "{}: not YAML: {parsed:?}", example.place);
        }
    }
    assert!(
        fragments <= 2,
        "{fragments} fragments: make examples whole specs that build"
    );
}

#[test]
fn every_yaml_example_in_the_docs_builds() {
    common::require_root!("namespaces, overlayfs");
    // Failed before: the Stages example had no gcc in its base and never created /out, and
    // the Variable substitution example ran a shell in `scratch`.
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "busybox-rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "busybox"]);
    let mut failures = Vec::new();
    for (n, example) in examples().iter().enumerate() {
        let Kind::Spec { build_args } = kind(example) else {
            continue;
        };
        let dir = env.path(&format!("example-{n}"));
        let project = dir.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let spec_file = project.join("kiln.yaml");
        std::fs::write(&spec_file, &example.text).unwrap();
        let spec = match kiln_spec::parse(&example.text, &spec_file, &arg_pairs(&build_args)) {
            Ok(spec) => spec,
            Err(e) => {
                failures.push(format!("{}: {e}", example.place));
                continue;
            }
        };
        let mut build = env.command();
        build.current_dir(&project).arg("build").args(&build_args);
        if spec.image.is_none() {
            build.args(["-t", &format!("example-{n}")]);
        }
        make_what_it_needs(&env, &dir, &spec, &mut build);
        let out = build.output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}\n{}",
                example.place,
                example.text,
                text(&out)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "examples that do not build:\n\n{}",
        failures.join("\n\n")
    );
}

/// `--arg K=V` pairs of an example's build command.
fn arg_pairs(build_args: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut args = build_args.iter();
    while let Some(arg) = args.next() {
        if arg == "--arg" {
            let kv = args.next().expect("--arg K=V");
            let (k, v) = kv.split_once('=').expect("--arg K=V");
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    pairs
}

/// Makes, below the example's folder `dir`, what the spec reads from the host: base images,
/// OCI layouts and root filesystems, the files its copies name in its contexts, secret
/// files and mount sources. Host paths outside `dir` (`/usr/bin`) must exist already.
fn make_what_it_needs(env: &Env, dir: &Path, spec: &Spec, build: &mut Command) {
    let ours = |path: &Path| path.starts_with(dir);
    let mut tagged = BTreeSet::new();
    for stage in &spec.stages {
        match &stage.from {
            From::Image(name) if tagged.insert(name.clone()) => {
                env.kiln_ok(&["tag", "busybox", name]);
            }
            From::OciLayout { path, tag } if ours(path) => oci_layout(env, path, tag.as_deref()),
            From::Rootfs(path) if ours(path) => {
                let rel = path.strip_prefix(env.dir.path()).unwrap();
                common::busybox_rootfs(env, rel.to_str().unwrap());
            }
            _ => {}
        }
        for step in &stage.steps {
            match &step.kind {
                StepKind::Copy(copy) => {
                    let context = match &copy.from {
                        CopyFrom::BuildContext => dir.join("project"),
                        CopyFrom::Context(name) => spec.contexts[name].clone(),
                        CopyFrom::Stage(_) => continue,
                    };
                    if ours(&context) {
                        for source in &copy.sources {
                            make_source(&context, source);
                        }
                    }
                }
                StepKind::Run(run) => {
                    for secret in &run.secrets {
                        match &secret.source {
                            SecretSource::File(path) if ours(path) => write(path, "a secret\n"),
                            SecretSource::Env(var) => {
                                build.env(var, "a secret");
                            }
                            SecretSource::File(_) => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for context in spec.contexts.values().filter(|c| ours(c)) {
        std::fs::create_dir_all(context).unwrap();
    }
    for mount in spec.run.mounts.iter().filter(|m| ours(&m.source)) {
        std::fs::create_dir_all(&mount.source).unwrap();
    }
}

/// A copy source in `context`: a directory (with a page in it) when the source ends with
/// `/`, else a file.
fn make_source(context: &Path, source: &str) {
    let path: PathBuf = context.join(source.trim_end_matches('/'));
    if source.ends_with('/') || source == "." {
        write(&path.join("index.html"), "<p>version @VERSION@</p>\n");
    } else if !path.exists() {
        write(&path, &format!("{source}\n"));
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// An OCI image layout at `path` holding the test's busybox image, named `tag`: the
/// store's blobs (the store is an OCI layout itself) and an index of that one image.
fn oci_layout(env: &Env, path: &Path, tag: Option<&str>) {
    let store = env.root();
    std::fs::create_dir_all(path.join("blobs/sha256")).unwrap();
    std::fs::copy(store.join("oci-layout"), path.join("oci-layout")).unwrap();
    for blob in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        std::fs::copy(
            blob.path(),
            path.join("blobs/sha256").join(blob.file_name()),
        )
        .unwrap();
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let mut busybox = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"] == "localhost/busybox:latest"
        })
        .expect("the busybox image")
        .clone();
    busybox["annotations"] = match tag {
        Some(tag) => serde_json::json!({ "org.opencontainers.image.ref.name": tag }),
        None => serde_json::json!({}),
    };
    let layout = serde_json::json!({ "schemaVersion": 2, "manifests": [busybox] });
    std::fs::write(path.join("index.json"), layout.to_string()).unwrap();
}
