//! The build contexts of one build, opened before its first step: each context a `copy`
//! step reads is opened once as a directory fd ([`ContextDir`]) with its ignore file and
//! hash memo, shared by every step (stages run in parallel), the memos saved at the end.
//!
//! Opened once and up front so that the digest a step's cache key holds and the files the
//! step copies come from the same directory, resolved beneath the same fd: never from a
//! path looked up again later, by then perhaps in a thread whose working directory is `/`,
//! or after the path was pointed elsewhere.
//!
//! One memo per context and build rather than per step because a memo drops, when saved,
//! the entries its build did not look at: saved per step, two steps copying different parts
//! of one context would keep evicting each other's hashes. Two names for one directory
//! share one entry for the same reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::context::{self, ContextDir, HashMemo, Ignore, IgnoreSyntax, SourcesDigest};
use super::{BuildError, BuildOptions, StepError};
use kiln_spec::{CopyFrom, CopyStep, Spec, Stage, StepKind};
use kiln_store::Store;

pub(super) struct Sources<'a> {
    store: &'a Store,
    /// Which of `opened` a `copy … from:` reads: `None` is the build context.
    names: BTreeMap<Option<String>, usize>,
    opened: Vec<Context>,
}

/// One open build context.
pub(super) struct Context {
    pub dir: ContextDir,
    pub ignore: Ignore,
    memo: Mutex<HashMemo>,
}

impl<'a> Sources<'a> {
    /// Opens every context a `copy` step of `stages` reads: `opts.context` and the spec's
    /// `contexts:` entries (all absolute paths). Contexts nothing copies from are not opened,
    /// so they need not exist.
    pub fn open<'s>(
        store: &'a Store,
        spec: &Spec,
        opts: &BuildOptions,
        stages: impl IntoIterator<Item = &'s Stage>,
    ) -> Result<Self, BuildError> {
        let mut sources = Sources {
            store,
            names: BTreeMap::new(),
            opened: Vec::new(),
        };
        for name in used_contexts(stages) {
            let path = match &name {
                None => &opts.context,
                Some(name) => spec
                    .contexts
                    .get(name)
                    .ok_or_else(|| BuildError::UnknownContext(name.clone()))?,
            };
            let index = sources.open_one(name.as_deref(), path)?;
            sources.names.insert(name, index);
        }
        Ok(sources)
    }

    /// Opens the context at `path`, or finds it among those already open under another
    /// name; returns its index in `opened`.
    fn open_one(&mut self, name: Option<&str>, path: &Path) -> Result<usize, BuildError> {
        let dir = ContextDir::open(path).map_err(|source| BuildError::ContextOpen {
            name: name.map(str::to_owned),
            path: path.to_owned(),
            source,
        })?;
        let same = |cx: &Context| cx.dir.real_path() == dir.real_path();
        if let Some(index) = self.opened.iter().position(same) {
            return Ok(index);
        }
        let context = Context {
            ignore: Ignore::load(&dir)?,
            memo: Mutex::new(HashMemo::load(self.store, &dir)),
            dir,
        };
        self.opened.push(context);
        Ok(self.opened.len() - 1)
    }

    /// The open context a `copy … from:` reads; `None` for a stage.
    pub fn context(&self, from: &CopyFrom) -> Option<&Context> {
        let name = match from {
            CopyFrom::BuildContext => None,
            CopyFrom::Context(name) => Some(name.clone()),
            CopyFrom::Stage(_) => return None,
        };
        self.names.get(&name).map(|&index| &self.opened[index])
    }

    /// What copying `sources` out of the context `from` names would copy, and its digest.
    pub fn digest(&self, from: &CopyFrom, sources: &[String]) -> Result<SourcesDigest, StepError> {
        let cx = self
            .context(from)
            .ok_or_else(|| StepError::ContextNotOpen(from.clone()))?;
        let mut memo = cx.memo.lock().expect("memo lock");
        Ok(context::copy_sources_digest(
            &cx.dir, sources, &cx.ignore, &mut memo,
        )?)
    }

    /// The ignore file each open context uses, with the context's name (`None`: the build
    /// context), in the order the contexts were opened.
    pub fn ignore_files(&self) -> Vec<(Option<&str>, &'static str, IgnoreSyntax)> {
        let mut files = Vec::new();
        for (index, cx) in self.opened.iter().enumerate() {
            let Some((file, syntax)) = cx.ignore.file() else {
                continue;
            };
            let name = self.names.iter().find(|(_, i)| **i == index);
            let name = name.and_then(|(name, _)| name.as_deref());
            files.push((name, file, syntax));
        }
        files
    }

    /// Saves every memo. A memo that cannot be saved only costs rereading next time.
    pub fn save(&self) {
        for cx in &self.opened {
            let _ = cx.memo.lock().expect("memo lock").save(self.store);
        }
    }
}

/// The contexts `copy` steps of `stages` read (`None`: the build context), each once.
fn used_contexts<'s>(stages: impl IntoIterator<Item = &'s Stage>) -> Vec<Option<String>> {
    let mut used: Vec<Option<String>> = Vec::new();
    let copies = stages
        .into_iter()
        .flat_map(|stage| &stage.steps)
        .filter_map(|step| match &step.kind {
            StepKind::Copy(CopyStep { from, .. }) => Some(from),
            _ => None,
        });
    for from in copies {
        let name = match from {
            CopyFrom::BuildContext => None,
            CopyFrom::Context(name) => Some(name.clone()),
            CopyFrom::Stage(_) => continue,
        };
        if !used.contains(&name) {
            used.push(name);
        }
    }
    used
}
