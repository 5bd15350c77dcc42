//! Running a spec's steps: `run` and `copy` make layers, `env`/`workdir`/`user` only edit
//! the config.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Instant;

use oci_spec::image::{Descriptor, MediaType};

use super::{
    passwd, BuildError, BuildOptions, Partial, Progress, Result, StepReport, Stream, DEFAULT_PATH,
};
use crate::image::{self, rfc3339, History};
use crate::layer::{self, CopyOptions, TarOptions};
use crate::runtime::{self, ExitStatus, NetworkMode, Overlay, StepSandbox};
use crate::spec::{Command, CopyStep, Network, RunStep, Spec, Step, StepKind};
use crate::store::{Store, StoreError, TempDir};

/// Everything a step needs besides its own definition.
struct StepContext<'a> {
    store: &'a Store,
    spec: &'a Spec,
    opts: &'a BuildOptions,
    progress: &'a dyn Progress,
    total: usize,
}

pub(super) fn run_all(
    store: &Store,
    spec: &Spec,
    opts: &BuildOptions,
    mut image: Partial,
    progress: &dyn Progress,
) -> Result<Partial> {
    let ctx = StepContext {
        store,
        spec,
        opts,
        progress,
        total: spec.steps.len(),
    };
    refuse_unimplemented(&ctx)?;
    let created = rfc3339(opts.epoch);
    image.config.created = Some(created.clone());
    for (k, v) in &spec.env {
        image.config.config.set_env(k, v);
    }
    if image.config.env_var("PATH").is_none() {
        image.config.config.set_env("PATH", DEFAULT_PATH);
    }
    for (index, step) in spec.steps.iter().enumerate() {
        let title = title(&step.kind);
        progress.step_started(index, ctx.total, &title);
        let started = Instant::now();
        let layer = run_one(&ctx, index, step, &title, &mut image)?;
        image.config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(created_by(&step.kind)),
            comment: Some("kiln".into()),
            empty_layer: layer.is_none(),
            ..Default::default()
        });
        let report = StepReport {
            duration: started.elapsed(),
            layer: layer.as_ref().map(|d| {
                (
                    image::oci_digest(d).expect("kiln wrote this digest"),
                    d.size(),
                )
            }),
        };
        progress.step_finished(index, &report);
    }
    image.config.config.apply_spec(&spec.config);
    Ok(image)
}

/// `cache:` and `secrets:` parse (the spec format has them) but are not built yet: refuse
/// them before any step runs rather than silently building without them.
fn refuse_unimplemented(ctx: &StepContext) -> Result<()> {
    for (index, step) in ctx.spec.steps.iter().enumerate() {
        let StepKind::Run(run) = &step.kind else {
            continue;
        };
        let unsupported = match (run.cache.is_empty(), run.secrets.is_empty()) {
            (false, _) => "cache:",
            (_, false) => "secrets:",
            _ => continue,
        };
        let message =
            format!("{unsupported} on run steps is not supported yet (remove it from this step)");
        return Err(step_error(ctx, index, step, &title(&step.kind), message));
    }
    Ok(())
}

fn run_one(
    ctx: &StepContext,
    index: usize,
    step: &Step,
    title: &str,
    image: &mut Partial,
) -> Result<Option<Descriptor>> {
    let config = &mut image.config.config;
    match &step.kind {
        StepKind::Env(vars) => {
            for (k, v) in vars {
                config.set_env(k, v);
            }
            Ok(None)
        }
        StepKind::Workdir(dir) => {
            config.working_dir = Some(join_workdir(config.working_dir.as_deref(), dir));
            Ok(None)
        }
        StepKind::User(user) => {
            config.user = Some(user.clone());
            Ok(None)
        }
        StepKind::Run(run) => {
            let staging = StepDirs::new(ctx.store)?;
            run_in_sandbox(ctx, index, step, title, run, image, &staging)?;
            capture(ctx, &staging, image)
        }
        StepKind::Copy(copy) => {
            let staging = StepDirs::new(ctx.store)?;
            copy_into_image(ctx, index, step, title, copy, image, &staging)?;
            capture(ctx, &staging, image)
        }
    }
}

/// A step's private dirs: the overlay upper (which becomes the layer) and work dir.
struct StepDirs {
    tmp: TempDir,
}

impl StepDirs {
    fn new(store: &Store) -> Result<Self> {
        let tmp = store.temp_dir("step")?;
        for d in ["upper", "work"] {
            let p = tmp.path().join(d);
            fs::create_dir(&p).map_err(StoreError::io("create", &p))?;
        }
        Ok(StepDirs { tmp })
    }

    fn upper(&self) -> std::path::PathBuf {
        self.tmp.path().join("upper")
    }

    fn overlay(&self, store: &Store, image: &Partial) -> Overlay {
        Overlay {
            layers_dir: store.layers_dir(),
            lowers: image.config.lower_layer_names(),
            upper: self.upper(),
            work: self.tmp.path().join("work"),
        }
    }
}

fn location(ctx: &StepContext, step: &Step) -> String {
    format!(
        "{}:{}:{}",
        ctx.spec.file.display(),
        step.location.line,
        step.location.column
    )
}

fn step_error(
    ctx: &StepContext,
    index: usize,
    step: &Step,
    title: &str,
    message: String,
) -> BuildError {
    BuildError::Step {
        location: location(ctx, step),
        number: index + 1,
        title: title.into(),
        message,
    }
}

fn run_in_sandbox(
    ctx: &StepContext,
    index: usize,
    step: &Step,
    title: &str,
    run: &RunStep,
    image: &Partial,
    dirs: &StepDirs,
) -> Result<()> {
    let overlay = dirs.overlay(ctx.store, image);
    let user = passwd::resolve_in_image(&overlay, image.config.config.user.as_deref())
        .map_err(|e| step_error(ctx, index, step, title, e.to_string()))?;
    let mut env = image.config.config.env.clone();
    env.extend(
        ctx.spec
            .args
            .iter()
            .filter(|(k, _)| image.config.env_var(k).is_none())
            .map(|(k, v)| format!("{k}={v}")),
    );
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let sandbox = StepSandbox {
        overlay,
        argv: run.command.argv(),
        env,
        cwd: image
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into()),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname: "kiln-build".into(),
        network: match run.network {
            Network::Host => NetworkMode::Host,
            Network::None => NetworkMode::None,
        },
        stdout: out_w,
        stderr: err_w,
    };
    let status = std::thread::scope(|s| {
        s.spawn(|| forward_lines(ctx.progress, index, Stream::Stdout, out_r));
        s.spawn(|| forward_lines(ctx.progress, index, Stream::Stderr, err_r));
        let status = runtime::run_step(&sandbox);
        drop(sandbox);
        status
    });
    let status = status.map_err(|source| BuildError::StepSetup {
        location: location(ctx, step),
        number: index + 1,
        title: title.into(),
        source,
    })?;
    match status {
        ExitStatus::Exited(0) => Ok(()),
        status => Err(BuildError::StepFailed {
            location: location(ctx, step),
            number: index + 1,
            title: title.into(),
            status,
        }),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        StoreError::Io {
            what: "create",
            path: "pipe".into(),
            source: e.into(),
        }
        .into()
    })
}

fn forward_lines(progress: &dyn Progress, index: usize, stream: Stream, fd: OwnedFd) {
    let mut reader = BufReader::new(fs::File::from(fd));
    let mut line = Vec::new();
    while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        progress.step_output(index, stream, &line);
        line.clear();
    }
}

fn copy_into_image(
    ctx: &StepContext,
    index: usize,
    step: &Step,
    title: &str,
    copy: &CopyStep,
    image: &Partial,
    dirs: &StepDirs,
) -> Result<()> {
    let context = match &copy.from {
        None => ctx.opts.context.clone(),
        Some(name) => ctx.spec.contexts.get(name).cloned().ok_or_else(|| {
            step_error(
                ctx,
                index,
                step,
                title,
                format!("no build context named {name:?} in contexts:"),
            )
        })?,
    };
    let overlay = dirs.overlay(ctx.store, image);
    let workdir = image
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let outcome = runtime::with_overlay(&overlay, |root| -> std::result::Result<(), String> {
        let owner = match &copy.owner {
            None => passwd::User::ROOT,
            Some(o) => passwd::resolve(root, o).map_err(|e| e.to_string())?,
        };
        let opts = CopyOptions {
            mode: copy.mode,
            uid: owner.uid,
            gid: owner.gid,
        };
        layer::copy_in(&context, &copy.sources, root, &copy.to, &workdir, &opts)
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    outcome
        .map_err(BuildError::from)?
        .map_err(|m| step_error(ctx, index, step, title, m))
}

/// Turns a step's upper dir into a committed layer, or `None` when the step changed nothing.
fn capture(ctx: &StepContext, dirs: &StepDirs, image: &mut Partial) -> Result<Option<Descriptor>> {
    // The sandbox mounts /proc, /dev and /sys from a separate top layer, so an empty upper
    // dir really means the step changed nothing.
    let upper = dirs.upper();
    if is_empty_dir(&upper) {
        return Ok(None);
    }
    let mut blob = ctx.store.new_blob()?;
    let written = layer::write_layer(
        &upper,
        &mut blob,
        ctx.opts.compression,
        &TarOptions {
            epoch: ctx.opts.epoch,
        },
    )?;
    let (digest, size) = blob.commit(Some(&written.digest))?;
    ctx.store.commit_layer(&upper, &written.diff_id)?;
    let desc = image::descriptor(
        MediaType::from(ctx.opts.compression.media_type()),
        &digest,
        size,
    );
    image
        .config
        .rootfs
        .diff_ids
        .push(written.diff_id.to_string());
    image.layers.push(desc.clone());
    Ok(Some(desc))
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut it| it.next().is_none())
}

fn join_workdir(current: Option<&str>, dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("{}/{}", current.unwrap_or("").trim_end_matches('/'), dir)
    }
}

/// A one-line description of a step for progress output.
fn title(kind: &StepKind) -> String {
    let full = created_by(kind);
    let first = full.lines().next().unwrap_or("");
    let mut t: String = first.chars().take(60).collect();
    if t.len() < full.len() {
        t.push('…');
    }
    t
}

/// The history entry of a step: what it did, in spec terms.
fn created_by(kind: &StepKind) -> String {
    match kind {
        StepKind::Run(r) => match &r.command {
            Command::Shell(s) => format!("run: {}", s.trim_end()),
            Command::Argv(v) => format!("run: {}", serde_json::to_string(v).unwrap_or_default()),
        },
        StepKind::Copy(c) => format!("copy: {} to {}", c.sources.join(" "), c.to),
        StepKind::Env(vars) => {
            let kv: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("env: {}", kv.join(" "))
        }
        StepKind::Workdir(w) => format!("workdir: {w}"),
        StepKind::User(u) => format!("user: {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_join_like_docker() {
        assert_eq!(join_workdir(None, "/srv"), "/srv");
        assert_eq!(join_workdir(Some("/srv"), "www"), "/srv/www");
        assert_eq!(join_workdir(None, "app"), "/app");
    }
}
