//! `kiln convert Dockerfile [-o kiln.yaml]`: a Dockerfile translated into a kiln spec.
//!
//! Exists so a project moving from Docker starts from a spec that builds the same image,
//! not from a blank file and docs/coming-from-docker.md's table, which this follows rule
//! for rule. What kiln cannot express (ONBUILD, ADD of a URL, COPY wildcards, mounts other
//! than cache and secret, …) is not guessed at: it is a warning naming the Dockerfile's
//! line and a `# TODO` comment where the instruction stood. The spec is still written and
//! the exit code is 0, since the rest is usable; `--strict` makes any warning exit 1 with
//! nothing written, for scripts that want an exact translation or none.
//!
//! The Dockerfile parser is kiln's own (`parse`, which says why no crate is used); the
//! written spec is parsed back with kiln-spec before it is written, so a spec that would not
//! load is kiln convert's bug, reported as such, never a file left for `kiln build` to reject
//! (except for being larger than kiln loads, which is the Dockerfile's size, said as such).
//!
//! A Dockerfile is whatever file the user names, so it is read only up to
//! [`MAX_DOCKERFILE_BYTES`] and must be UTF-8 text: a huge or binary file is one clear error,
//! not a long wait or a spec no one can load.

mod parse;
mod translate;
mod words;
mod yaml;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CmdResult, Failure, Globals};
use translate::{Converted, Options, Warning};

#[derive(Args, Debug)]
#[command(
    about = "Translate a Dockerfile into a kiln.yaml spec",
    after_help = "Examples:\n  kiln convert Dockerfile -o kiln.yaml && kiln build -t app\n  kiln convert                       # ./Dockerfile to stdout\n  kiln convert -t app:1 build/Dockerfile.prod -o kiln.yaml --force\n  kiln convert --strict Dockerfile > /dev/null   # exit 1 unless every instruction translates\n\nWhat has no kiln equivalent (ONBUILD, ADD of a URL, …) is a warning naming the\nDockerfile's line and a # TODO in the spec; the spec is still written (exit 0)."
)]
pub struct ConvertArgs {
    /// The Dockerfile; its folder is the build context its COPY and ADD read
    #[arg(default_value = "Dockerfile", value_name = "DOCKERFILE")]
    dockerfile: PathBuf,
    /// Write the spec to FILE instead of stdout (`-` is stdout)
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite FILE when it exists
    #[arg(long)]
    force: bool,
    /// Exit 1, writing nothing, when anything could not be translated exactly
    #[arg(long)]
    strict: bool,
    /// The spec's image: (its default tag)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tag: Option<String>,
}

/// Four times what one spec may hold: room for long comments and blank lines, which a spec
/// does not keep, and still a bound on what convert reads and holds.
const MAX_DOCKERFILE_BYTES: usize = 4 * translate::MAX_SPEC_BYTES;

pub fn run(globals: &Globals, args: ConvertArgs) -> CmdResult {
    let shown = args.dockerfile.display().to_string();
    let text = read_dockerfile(&args.dockerfile, &shown)?;
    let output = match args.output.as_deref() {
        Some(p) if p != Path::new("-") => Some(super::absolute(p)?),
        _ => None,
    };
    if let Some(out) = &output {
        refuse_overwrite(out, args.force)?;
    }
    let file = parse::parse(&text).map_err(|e| located(&shown, e.line, e.message, e.hint))?;
    let dockerfile = super::absolute(&args.dockerfile)?;
    let context = dockerfile.parent().unwrap_or(Path::new("/")).to_path_buf();
    let options = Options {
        context: &context,
        image: args.tag.as_deref(),
    };
    let mut converted = translate::convert(&file, &options)
        .map_err(|w| located(&shown, w.line, w.message, w.hint))?;
    converted.header = header(&shown, &dockerfile, &context, args.tag.is_some());
    ignore_file_warning(&dockerfile, &mut converted.warnings);
    let spec = yaml::document(&converted.header, &converted.entries);
    let spec_path = output.clone().unwrap_or_else(|| context.join("kiln.yaml"));
    check_spec(&spec, &spec_path, &shown)?;
    report(&shown, &converted);
    if args.strict && !converted.warnings.is_empty() {
        return Err(Failure::user(format!(
            "{shown}: {} of its instructions could not be translated exactly (--strict)",
            converted.warnings.len()
        ))
        .hint(Some(
            "the warnings above say which; nothing was written".into(),
        )));
    }
    match output {
        Some(out) => {
            write_file(&out, &spec)?;
            if !globals.quiet {
                eprintln!("wrote {} from {shown}", out.display());
            }
        }
        None => print!("{spec}"),
    }
    Ok(0)
}

/// The Dockerfile's text: at most [`MAX_DOCKERFILE_BYTES`], and UTF-8 (BuildKit reads
/// bytes, but a spec is UTF-8; the line of the first byte that is not is named).
fn read_dockerfile(path: &Path, shown: &str) -> Result<String, Failure> {
    let unreadable = |e: std::io::Error| Failure::user(format!("{shown}: cannot read it: {e}"));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_DOCKERFILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(unreadable)?;
    if bytes.len() > MAX_DOCKERFILE_BYTES {
        return Err(Failure::user(format!(
            "{shown}: larger than {} MiB, more than a Dockerfile kiln convert reads",
            MAX_DOCKERFILE_BYTES >> 20
        ))
        .hint(Some(format!(
            "a kiln spec holds at most {} KiB; is it a Dockerfile?",
            translate::MAX_SPEC_BYTES >> 10
        ))));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        located(
            shown,
            line,
            "not UTF-8 text".into(),
            Some("kiln convert reads Dockerfiles in UTF-8; is it a Dockerfile?".into()),
        )
    })
}

/// `FILE:LINE: message`, with a hint, as kiln reports a spec's problems.
fn located(file: &str, line: usize, message: String, hint: Option<String>) -> Failure {
    Failure::user(format!("{file}:{line}: {message}")).hint(hint)
}

fn refuse_overwrite(out: &Path, force: bool) -> Result<(), Failure> {
    match !force && out.symlink_metadata().is_ok() {
        true => Err(Failure::user(format!("{}: exists", out.display()))
            .hint(Some("give --force to overwrite it".into()))),
        false => Ok(()),
    }
}

/// What the reader of the spec should know first: where it came from and the two
/// differences every Dockerfile meets.
fn header(shown: &str, dockerfile: &Path, context: &Path, tagged: bool) -> Vec<String> {
    let mut lines = vec![
        format!("Converted from {shown} by kiln convert (specs/spec.md has every key)."),
        "A string run: runs with /bin/sh -e -c (Docker's RUN: /bin/sh -c), so a failing".into(),
        "command stops it; copy: gives files 0644 or 0755 (by the execute bit) unless mode:."
            .into(),
    ];
    let ignore = [".kilnignore", ".containerignore", ".dockerignore"]
        .into_iter()
        .find(|name| context.join(name).exists());
    if let Some(name) = ignore {
        lines.push(format!(
            "kiln build reads {name} of the build context, as docker reads .dockerignore."
        ));
    }
    if !tagged {
        lines.push("Build it with: kiln build -t NAME".into());
    }
    let _ = dockerfile;
    lines
}

/// Docker reads `NAME.Dockerfile.dockerignore` (or `Dockerfile.dockerignore`) beside a
/// Dockerfile before `.dockerignore`; kiln reads only the context's own ignore files.
fn ignore_file_warning(dockerfile: &Path, warnings: &mut Vec<Warning>) {
    let mut own = dockerfile.as_os_str().to_owned();
    own.push(".dockerignore");
    let own = PathBuf::from(own);
    if own.exists() {
        let name = own.file_name().unwrap_or_default().to_string_lossy();
        warnings.push(Warning {
            line: 1,
            message: format!("{name} is not read by kiln build"),
            hint: Some(
                "kiln reads .kilnignore, .containerignore or .dockerignore of the \
                        context: rename it to .dockerignore"
                    .into(),
            ),
        });
    }
}

/// The spec must load as kiln build will load it; if it does not, convert is wrong,
/// unless it is only too large for a spec, which is the Dockerfile's size.
fn check_spec(spec: &str, path: &Path, shown: &str) -> Result<(), Failure> {
    let too_large = |message: &str| {
        Failure::user(format!(
            "{shown}: too large to be one kiln spec ({message})"
        ))
        .hint(Some(
            "kiln loads specs up to 1024 KiB and 100000 values: split the Dockerfile".into(),
        ))
    };
    if spec.len() > translate::MAX_SPEC_BYTES {
        return Err(too_large(&format!("{} KiB", spec.len() >> 10)));
    }
    kiln_spec::parse(spec, path, &[]).map(|_| ()).map_err(|e| {
        // kiln-spec's words for the bound on values (the size is checked above).
        if e.message.starts_with("the spec is too large") {
            return too_large(&e.message);
        }
        // Most likely a value kiln checks where docker would fail later (a user, a signal,
        // an image name); either way the Dockerfile is the way to find it.
        Failure::user(format!(
            "{shown}: kiln refuses the spec it translates to: {e}"
        ))
        .hint(Some(
            "a value of the Dockerfile that kiln does not take, which docker may refuse too; \
             if docker builds this Dockerfile, it is a bug in kiln convert: please report it"
                .into(),
        ))
    })
}

fn report(shown: &str, converted: &Converted) {
    let mut err = std::io::stderr().lock();
    for w in &converted.warnings {
        let hint = w
            .hint
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        let _ = writeln!(err, "warning: {shown}:{}: {}{hint}", w.line, w.message);
    }
}

/// Written next to its final name and renamed, so a failed write leaves no half spec.
fn write_file(out: &Path, spec: &str) -> Result<(), Failure> {
    let failed =
        |e: std::io::Error| Failure::user(format!("{}: cannot write it: {e}", out.display()));
    let mut staged = out.as_os_str().to_owned();
    staged.push(format!(".kiln-convert-{}", std::process::id()));
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, spec).map_err(failed)?;
    std::fs::rename(&staged, out).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        failed(e)
    })
}
