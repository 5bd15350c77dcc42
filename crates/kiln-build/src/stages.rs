//! Multi-stage builds: which stages the image needs, and building them in dependency
//! order, independent ones in parallel.
//!
//! A stage depends on the stage its `from:` names and on every stage a `copy` takes files
//! from. Only the target stage and what it depends on are built (BuildKit does the same).
//! Stages whose dependencies are done start right away, at most one per core: a stage is
//! mostly one process at a time, and the machines kiln targets have few cores.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;

use super::sources::Sources;
use super::steps::{self, CachePolicy, StageJob, StageOutput};
use super::{base, BuildError, BuildOptions, Progress, Result, StagePlan};
use kiln_spec::{From, Spec};
use kiln_store::Store;

/// What to build: the last stage of `spec` and everything it needs, with this cache policy.
pub(super) struct Request<'a> {
    pub store: &'a Store,
    pub spec: &'a Spec,
    pub opts: &'a BuildOptions,
    pub progress: &'a dyn Progress,
    pub cache: &'a CachePolicy,
    pub plan: bool,
    pub sources: &'a Sources<'a>,
    /// Every step record the build settles, for `--cache-to`.
    pub records: &'a std::sync::Mutex<Vec<kiln_store::StepRecord>>,
}

/// Builds the target stage and the stages it needs; returns the target's output.
pub(super) fn build(req: &Request) -> Result<StageOutput> {
    let target = req.spec.stages.len() - 1;
    let needed = needed_stages(req.spec);
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let mut outputs: BTreeMap<usize, StageOutput> = BTreeMap::new();
    let mut pending: Vec<usize> = needed.into_iter().collect();
    let mut failure: Option<BuildError> = None;
    thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel();
        let mut running = 0;
        loop {
            while failure.is_none() && running < workers {
                let Some(pos) = pending.iter().position(|&i| {
                    dependencies(req.spec, i)
                        .iter()
                        .all(|d| outputs.contains_key(d))
                }) else {
                    break;
                };
                let index = pending.remove(pos);
                let inputs = dependencies(req.spec, index)
                    .into_iter()
                    .map(|d| (req.spec.stages[d].name.clone(), outputs[&d].clone()))
                    .collect();
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    let _ = done_tx.send((index, build_one(req, index, inputs)));
                });
                running += 1;
            }
            if running == 0 {
                break;
            }
            let (index, result) = done_rx
                .recv()
                .expect("a stage thread reports before it ends");
            running -= 1;
            match result {
                Ok(output) => {
                    outputs.insert(index, output);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if req.plan && req.spec.stages.len() > 1 {
        report_stage_plans(req, &outputs);
    }
    Ok(outputs.remove(&target).expect("the target stage was built"))
}

/// `--plan`: says of each needed stage whether it would be rebuilt and which stages use
/// it, since a stage that reruns reruns what uses it too.
fn report_stage_plans(req: &Request, outputs: &BTreeMap<usize, StageOutput>) {
    let spec = req.spec;
    for (&index, output) in outputs {
        let used_by = outputs
            .keys()
            .filter(|&&user| dependencies(spec, user).contains(&index))
            .map(|&user| spec.stages[user].name.as_str())
            .collect();
        req.progress.stage_planned(&StagePlan {
            stage: &spec.stages[index].name,
            would_run: matches!(output, StageOutput::Unknown),
            used_by,
        });
    }
}

fn build_one(
    req: &Request,
    index: usize,
    inputs: BTreeMap<String, StageOutput>,
) -> Result<StageOutput> {
    let stage = &req.spec.stages[index];
    let base = match &stage.from {
        From::Stage(name) => inputs
            .get(name)
            .cloned()
            .expect("a from: stage is a dependency"),
        From::Image(name) if req.plan && req.store.find(name)?.is_none() => {
            req.progress
                .phase(&format!("{name} is not in the store: it would be pulled"));
            StageOutput::Unknown
        }
        from => StageOutput::Built(Box::new(base::resolve(
            req.store,
            from,
            req.opts,
            req.progress,
        )?)),
    };
    let job = StageJob {
        store: req.store,
        spec: req.spec,
        opts: req.opts,
        progress: req.progress,
        index,
        cache: req.cache,
        plan: req.plan,
        sources: req.sources,
        inputs,
        records: req.records,
    };
    steps::build_stage(&job, base)
}

/// Indices of the stages stage `index` uses directly.
fn dependencies(spec: &Spec, index: usize) -> BTreeSet<usize> {
    spec.stages[index]
        .dependencies()
        .into_iter()
        .filter_map(|name| spec.stage_index(name))
        .collect()
}

/// The target (last) stage and every stage it needs, transitively.
pub(super) fn needed_stages(spec: &Spec) -> BTreeSet<usize> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![spec.stages.len() - 1];
    while let Some(index) = todo.pop() {
        if needed.insert(index) {
            todo.extend(dependencies(spec, index));
        }
    }
    needed
}
