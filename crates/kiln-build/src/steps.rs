//! One stage's steps: the stage loop, settling each `run`/`copy` step (found in the build
//! cache by its key, or run and recorded) and capturing what it changed as a layer;
//! `env`/`workdir`/`user` only edit the config.
//!
//! Exists as the one place that decides whether a step runs, so the cache key, the record
//! that explains a miss and `--plan` cannot disagree. Running a step is elsewhere: a `run`
//! step in `run_step.rs`, a `copy` step in `copy_step.rs`; both only fill the step's upper
//! dir (`StepDirs`), which `capture` here turns into a layer.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use oci_spec::image::{Descriptor, MediaType};

use super::context::SourceEntry;
use super::copy_step::copy_into_image;
use super::key::{state_id, KeyInputs};
use super::lent::{self, Lent};
use super::record::{self, StageRecord, StepEntry};
use super::run_step::{run_in_sandbox, step_confinement};
use super::sources::Sources;
use super::stage_copy;
use super::{
    BuildError, BuildOptions, Outcome, Partial, Progress, Result, StepError, StepRef, StepReport,
    DEFAULT_PATH,
};
use kiln_image::{rfc3339, History};
use kiln_layer::{self as layer, TarOptions};
use kiln_progress::RunReason;
use kiln_runtime::Overlay;
use kiln_spec::{Command, CopyFrom, CopyStep, Spec, Stage, Step, StepKind};
use kiln_store::{Digest, StepRecord, Store, StoreError, TempDir};

/// Which steps must run even when cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Use the cache for every step.
    #[default]
    Use,
    /// `--no-cache`: run every step.
    Ignore,
    /// `--no-cache-from`: run this step of this stage (0-based) and every later step of it.
    IgnoreFrom { stage: usize, step: usize },
}

/// What a finished stage hands to the stages that use it.
#[derive(Debug, Clone)]
pub(super) enum StageOutput {
    Built(Box<Partial>),
    /// `--plan` only: a step of the stage would run, so its result is not known.
    Unknown,
}

/// One stage to build, with everything its steps need besides their own definition.
pub(super) struct StageJob<'a> {
    pub store: &'a Store,
    pub spec: &'a Spec,
    pub opts: &'a BuildOptions,
    pub progress: &'a dyn Progress,
    pub index: usize,
    pub cache: &'a CachePolicy,
    /// `--plan`: decide what would run, run nothing.
    pub plan: bool,
    /// The build contexts `copy` steps read.
    pub sources: &'a Sources<'a>,
    /// Outputs of the stages this one uses (`from:` or `copy: from:`), by name.
    pub inputs: BTreeMap<String, StageOutput>,
    /// Every step record the build settles, for `--cache-to`.
    pub records: &'a std::sync::Mutex<Vec<StepRecord>>,
}

impl StageJob<'_> {
    fn stage(&self) -> &Stage {
        &self.spec.stages[self.index]
    }

    /// The name shown with its steps' output; `None` for a single-stage spec.
    fn shown_name(&self) -> Option<&str> {
        (self.spec.stages.len() > 1).then(|| self.stage().name.as_str())
    }

    /// How events name step `index` of this stage.
    fn step_ref<'t>(&'t self, index: usize, title: &'t str) -> StepRef<'t> {
        StepRef {
            stage: self.shown_name(),
            index,
            total: self.stage().steps.len(),
            title,
        }
    }

    /// Whether another stage's `copy` step reads this stage's files.
    fn copied_from(&self) -> bool {
        let name = self.stage().name.as_str();
        self.spec.stages.iter().any(|stage| {
            stage.steps.iter().any(|step| {
                matches!(&step.kind, StepKind::Copy(CopyStep { from: CopyFrom::Stage(from), .. }) if from == name)
            })
        })
    }

    /// Notes the record a step was settled with, for `--cache-to`.
    fn settled_with(&self, record: &StepRecord) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record.clone());
        }
    }

    fn forces_run(&self, step: usize) -> bool {
        match *self.cache {
            CachePolicy::Use => false,
            CachePolicy::Ignore => true,
            // Later stages are not forced: they see the rebuilt result, and rerun where it
            // differs.
            CachePolicy::IgnoreFrom { stage, step: from } => self.index == stage && step >= from,
        }
    }
}

/// How one step was settled while building a stage.
struct Settled {
    layer: Option<Descriptor>,
    outcome: Outcome,
}

/// Builds (or, with `--plan`, only decides) the steps of one stage on `image`.
pub(super) fn build_stage(job: &StageJob, base: StageOutput) -> Result<StageOutput> {
    let StageOutput::Built(mut image) = base else {
        let reason = match &job.stage().from {
            kiln_spec::From::Stage(name) => format!("base stage {name:?} will be rebuilt"),
            _ => "base image will be pulled".to_string(),
        };
        plan_unknown(job, 0, &RunReason::Changed(reason));
        return Ok(StageOutput::Unknown);
    };
    let stage = job.stage();
    let record_id = record::record_id(&job.opts.spec_file, &stage.name);
    let previous = record::load(job.store, &record_id);
    let mut record = StageRecord::default();
    let created = rfc3339(job.opts.epoch);
    image.config.created = Some(created.clone());
    for (k, v) in &stage.env {
        image.config.config.set_env(k, v);
    }
    if image.config.env_var("PATH").is_none() {
        image.config.config.set_env("PATH", DEFAULT_PATH);
    }
    let mut earlier_ran = false;
    let mut lent = Lent::default();
    for (index, step) in stage.steps.iter().enumerate() {
        let title = title(&step.kind, job.opts);
        let step_ref = job.step_ref(index, &title);
        let started = Instant::now();
        let settled = match &step.kind {
            StepKind::Env(_) | StepKind::Workdir(_) | StepKind::User(_) => {
                job.progress.step_started(&step_ref, None);
                apply_config_step(&step.kind, &mut image);
                record.steps.push(None);
                Settled {
                    layer: None,
                    outcome: Outcome::Config,
                }
            }
            StepKind::Run(_) | StepKind::Copy(_) => {
                let previous = previous.steps.get(index).and_then(Option::as_ref);
                let cx = StepCx {
                    job,
                    index,
                    step,
                    step_ref: &step_ref,
                };
                let settled = settle(&cx, &mut image, previous, earlier_ran, &mut lent)?;
                let (settled, entry) = match settled {
                    Some(done) => done,
                    None => {
                        plan_unknown(
                            job,
                            index + 1,
                            &RunReason::Changed("parent will be rebuilt".into()),
                        );
                        return Ok(StageOutput::Unknown);
                    }
                };
                earlier_ran |= matches!(settled.outcome, Outcome::Ran(_));
                record.steps.push(Some(entry));
                settled
            }
        };
        image.config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(created_by(&step.kind)),
            comment: Some("kiln".into()),
            empty_layer: settled.layer.is_none(),
            ..Default::default()
        });
        let report = StepReport {
            duration: started.elapsed(),
            layer: settled.layer.as_ref().map(|d| {
                (
                    Digest::try_from(d).expect("kiln wrote this digest"),
                    d.size(),
                )
            }),
            outcome: settled.outcome,
        };
        job.progress.step_finished(&step_ref, &report);
    }
    // A plan fetches lent layers only where a copy must read them to know its key.
    if !job.plan || job.copied_from() {
        lent.fetch(job.store, &job.opts.cache_from, &image)?;
    }
    if !job.plan {
        record::save(job.store, &record_id, &previous, &record);
    }
    Ok(StageOutput::Built(image))
}

/// `--plan`: reports the steps from `from` on as runs whose parent is not known yet.
fn plan_unknown(job: &StageJob, from: usize, reason: &RunReason) {
    let stage = job.stage();
    for (index, step) in stage.steps.iter().enumerate().skip(from) {
        let title = title(&step.kind, job.opts);
        let step_ref = job.step_ref(index, &title);
        let outcome = match step.kind {
            StepKind::Run(_) | StepKind::Copy(_) => Outcome::WouldRun(reason.clone()),
            _ => Outcome::Config,
        };
        job.progress.step_started(&step_ref, None);
        job.progress.step_finished(
            &step_ref,
            &StepReport {
                duration: Default::default(),
                layer: None,
                outcome,
            },
        );
    }
}

fn apply_config_step(kind: &StepKind, image: &mut Partial) {
    let config = &mut image.config.config;
    match kind {
        StepKind::Env(vars) => {
            for (k, v) in vars {
                config.set_env(k, v);
            }
        }
        StepKind::Workdir(dir) => {
            config.working_dir = Some(join_workdir(config.working_dir.as_deref(), dir));
        }
        StepKind::User(user) => config.user = Some(user.clone()),
        StepKind::Run(_) | StepKind::Copy(_) => unreachable!("not a config step"),
    }
}

/// A step being settled, for messages and for running it.
pub(super) struct StepCx<'a> {
    pub job: &'a StageJob<'a>,
    pub index: usize,
    pub step: &'a Step,
    pub step_ref: &'a StepRef<'a>,
}

impl StepCx<'_> {
    pub(super) fn title(&self) -> &str {
        self.step_ref.title
    }

    pub(super) fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.job.opts.spec_shown.display(),
            self.step.location.line,
            self.step.location.column
        )
    }

    pub(super) fn error(&self, source: impl Into<StepError>) -> BuildError {
        BuildError::Step {
            location: self.location(),
            number: self.index + 1,
            title: self.title().into(),
            source: Box::new(source.into()),
        }
    }
}

/// Finds a `run`/`copy` step in the cache or runs it. `None` in `--plan` mode when the step
/// would run (what follows it cannot be known without running it).
fn settle(
    cx: &StepCx,
    image: &mut Partial,
    previous: Option<&StepEntry>,
    earlier_ran: bool,
    lent: &mut Lent,
) -> Result<Option<(Settled, StepEntry)>> {
    let job = cx.job;
    if let Some(stage) = unknown_stage_copied(cx) {
        // `--plan`: the stage it copies from would be rebuilt first.
        let reason = RunReason::Changed(format!(
            "copies from stage {stage:?}, which will be rebuilt"
        ));
        job.progress.step_started(cx.step_ref, Some(&reason));
        report_would_run(cx, reason);
        return Ok(None);
    }
    let (sources, files) = copy_sources(cx)?;
    let inputs = KeyInputs::new(
        &state_id(image),
        cx.step,
        &job.spec.args,
        sources.as_ref(),
        format!("{}/{}", job.opts.compression.media_type(), job.opts.epoch),
    );
    let key = inputs.key();
    let forced = job.forces_run(cx.index);
    tracing::debug!(
        stage = cx.step_ref.stage,
        step = cx.index + 1,
        title = cx.title(),
        %key,
        forced,
        "step cache key"
    );
    let hit = match forced {
        true => None,
        false => job.store.cached_step(&key)?,
    };
    let entry = StepEntry { inputs, files };
    if let Some(hit) = hit {
        job.progress.step_started(cx.step_ref, None);
        job.settled_with(&hit);
        let layer = reuse(image, &hit);
        let settled = Settled {
            layer,
            outcome: Outcome::Cached,
        };
        return Ok(Some((settled, entry)));
    }
    let remote = (!forced)
        .then(|| lent::lookup(&job.opts.cache_from, &key))
        .flatten();
    if let Some((cache, hit)) = remote {
        job.progress.step_started(cx.step_ref, None);
        job.settled_with(hit);
        let layer = reuse(image, hit);
        lent.lend(cache, image, hit.clone());
        let source = job.opts.cache_from[cache].reference.to_string();
        tracing::debug!(%key, cache = %source, "cache hit in a registry cache");
        let settled = Settled {
            layer,
            outcome: Outcome::CachedFrom(source),
        };
        return Ok(Some((settled, entry)));
    }
    let reason = match forced {
        true => match job.cache {
            CachePolicy::Ignore => RunReason::CacheIgnored,
            _ => RunReason::CacheIgnoredFrom,
        },
        false => record::explain(
            kind_name(&cx.step.kind),
            previous,
            &entry.inputs,
            &entry.files,
            earlier_ran,
        ),
    };
    job.progress.step_started(cx.step_ref, Some(&reason));
    if job.plan {
        report_would_run(cx, reason);
        return Ok(None);
    }
    tracing::debug!(
        stage = cx.step_ref.stage,
        step = cx.index + 1,
        title = cx.title(),
        "step runs"
    );
    // The step runs on the files of the steps before it, lent ones included.
    lent.fetch(job.store, &job.opts.cache_from, image)?;
    let layer = run_step(cx, image)?;
    let ran = StepRecord {
        key: key.clone(),
        layer: layer.clone(),
        diff_id: image
            .config
            .rootfs
            .diff_ids
            .last()
            .filter(|_| layer.is_some())
            .cloned(),
        created_by: created_by(&cx.step.kind),
    };
    job.store.record_step(&ran)?;
    job.settled_with(&ran);
    let settled = Settled {
        layer,
        outcome: Outcome::Ran(reason),
    };
    Ok(Some((settled, entry)))
}

/// `--plan`: the step ends as "would run", for `reason`.
fn report_would_run(cx: &StepCx, reason: RunReason) {
    cx.job.progress.step_finished(
        cx.step_ref,
        &StepReport {
            duration: Default::default(),
            layer: None,
            outcome: Outcome::WouldRun(reason),
        },
    );
}

/// Adds a cached step's layer to the image.
fn reuse(image: &mut Partial, hit: &StepRecord) -> Option<Descriptor> {
    let (layer, diff_id) = (hit.layer.clone()?, hit.diff_id.clone()?);
    image.config.rootfs.diff_ids.push(diff_id);
    image.layers.push(layer.clone());
    Some(layer)
}

/// What a `copy` step's key depends on beyond its definition: the content digest of the
/// files it copies, from a context or from a stage's filesystem, with the file list to
/// explain misses.
fn copy_sources(cx: &StepCx) -> Result<(Option<Digest>, Vec<SourceEntry>)> {
    let StepKind::Copy(copy) = &cx.step.kind else {
        return Ok((None, Vec::new()));
    };
    match &copy.from {
        CopyFrom::Stage(name) => match cx.job.inputs.get(name) {
            Some(StageOutput::Built(stage)) => {
                let found = stage_copy::digest(cx.job.store, stage, &copy.sources)
                    .map_err(|e| cx.error(e))?;
                Ok((Some(found.digest), found.files))
            }
            _ => Err(cx.error(StepError::StageNotBuilt(name.clone()))),
        },
        CopyFrom::BuildContext | CopyFrom::Context(_) => {
            let found = (cx.job.sources)
                .digest(&copy.from, &copy.sources)
                .map_err(|e| cx.error(e))?;
            Ok((Some(found.digest), found.files))
        }
    }
}

/// The stage a `copy … from:` step reads when, in `--plan`, that stage would be rebuilt,
/// so what it holds is not known.
fn unknown_stage_copied<'a>(cx: &StepCx<'a>) -> Option<&'a str> {
    match &cx.step.kind {
        StepKind::Copy(CopyStep {
            from: CopyFrom::Stage(name),
            ..
        }) => matches!(cx.job.inputs.get(name), Some(StageOutput::Unknown)).then_some(name),
        _ => None,
    }
}

fn run_step(cx: &StepCx, image: &mut Partial) -> Result<Option<Descriptor>> {
    let staging = StepDirs::new(cx.job.store)?;
    match &cx.step.kind {
        StepKind::Run(run) => run_in_sandbox(cx, run, image, &staging)?,
        StepKind::Copy(copy) => copy_into_image(cx, copy, image, &staging)?,
        _ => unreachable!("only run and copy steps make layers"),
    }
    capture(cx.job, &staging, image)
}

fn kind_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Run(_) => "run",
        StepKind::Copy(_) => "copy",
        StepKind::Env(_) => "env",
        StepKind::Workdir(_) => "workdir",
        StepKind::User(_) => "user",
    }
}

/// A step's private dirs: the overlay upper (which becomes the layer) and work dir.
pub(super) struct StepDirs {
    tmp: TempDir,
}

impl StepDirs {
    pub(super) fn new(store: &Store) -> Result<Self, StoreError> {
        let tmp = store.temp_dir("step")?;
        for d in ["upper", "work"] {
            let p = tmp.path().join(d);
            fs::create_dir(&p).map_err(StoreError::io("create", &p))?;
        }
        Ok(StepDirs { tmp })
    }

    /// The step's own temp dir (private to kiln), for files of its run.
    pub(super) fn run_dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// Writes `text` as the step's `/etc/NAME`, bound from here; its path.
    pub(super) fn etc_file(
        &self,
        name: &str,
        text: &str,
    ) -> Result<std::path::PathBuf, StoreError> {
        let path = self.tmp.path().join(name);
        fs::write(&path, text).map_err(StoreError::io("write", &path))?;
        Ok(path)
    }

    fn upper(&self) -> std::path::PathBuf {
        self.tmp.path().join("upper")
    }

    pub(super) fn overlay(&self, store: &Store, image: &Partial) -> Overlay {
        Overlay {
            layers_dir: store.layers_dir(),
            lowers: image.config.lower_layer_names(),
            upper: self.upper(),
            work: self.tmp.path().join("work"),
        }
    }
}

/// Turns a step's upper dir into a committed layer, or `None` when the step changed nothing.
fn capture(job: &StageJob, dirs: &StepDirs, image: &mut Partial) -> Result<Option<Descriptor>> {
    // The sandbox mounts /proc, /dev and /sys from a separate top layer, so an empty upper
    // dir really means the step changed nothing.
    let upper = dirs.upper();
    if is_empty_dir(&upper) {
        return Ok(None);
    }
    let mut blob = job.store.new_blob()?.write_back_as_written();
    let written = layer::write_layer(
        &upper,
        &mut blob,
        job.opts.compression,
        &TarOptions {
            epoch: job.opts.epoch,
        },
    )?;
    let (digest, size) = blob.commit(Some(&written.digest))?;
    job.store.commit_layer(&upper, &written.diff_id)?;
    let desc = kiln_store::oci::descriptor(
        MediaType::from(job.opts.compression.media_type()),
        &digest,
        size,
    );
    image.config.rootfs.diff_ids.push(written.diff_id.clone());
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

/// A one-line description of a step for progress output. A run step that may do more
/// than a default container says so: `run: ip link add … [cap-add NET_ADMIN]`.
pub(super) fn title(kind: &StepKind, opts: &BuildOptions) -> String {
    let full = created_by(kind);
    let first = full.lines().next().unwrap_or("");
    let mut t: String = first.chars().take(60).collect();
    if t.len() < full.len() {
        t.push('…');
    }
    if let StepKind::Run(run) = kind {
        // An invalid request is reported when the step runs.
        let grants = step_confinement(run, opts).map_or_else(|_| Vec::new(), |c| c.grants());
        let network = (run.network == kiln_spec::Network::Host).then(|| "network host".to_owned());
        let grants: Vec<String> = network.into_iter().chain(grants).collect();
        if !grants.is_empty() {
            t.push_str(&format!(" [{}]", grants.join(", ")));
        }
    }
    t
}

/// The history entry of a step: what it did, in spec terms.
fn created_by(kind: &StepKind) -> String {
    match kind {
        StepKind::Run(r) => match &r.command {
            Command::Shell { script, .. } => format!("run: {}", script.trim_end()),
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
