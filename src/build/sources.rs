//! The build contexts of one build: each context's `.kilnignore` and hash memo, loaded once
//! and shared by every `copy` step (stages run in parallel), the memo saved at the end.
//!
//! One memo per build rather than per step because a memo drops, when saved, the entries
//! its build did not look at: saved per step, two steps copying different parts of one
//! context would keep evicting each other's hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::context::{self, ContextError, HashMemo, Ignore, SourcesDigest};
use crate::store::Store;

pub(super) struct Sources<'a> {
    store: &'a Store,
    contexts: Mutex<BTreeMap<PathBuf, Context>>,
}

struct Context {
    ignore: Ignore,
    memo: HashMemo,
}

impl<'a> Sources<'a> {
    pub fn new(store: &'a Store) -> Self {
        Sources {
            store,
            contexts: Mutex::new(BTreeMap::new()),
        }
    }

    /// What copying `sources` out of the context `dir` would copy, and its digest.
    pub fn digest(&self, dir: &Path, sources: &[String]) -> Result<SourcesDigest, ContextError> {
        let mut contexts = self.contexts.lock().expect("sources lock");
        let cx = self.context(&mut contexts, dir)?;
        context::copy_sources_digest(dir, sources, &cx.ignore, &mut cx.memo)
    }

    /// The `.kilnignore` rules of the context `dir`.
    pub fn ignore(&self, dir: &Path) -> Result<Ignore, ContextError> {
        let mut contexts = self.contexts.lock().expect("sources lock");
        Ok(self.context(&mut contexts, dir)?.ignore.clone())
    }

    fn context<'m>(
        &self,
        contexts: &'m mut BTreeMap<PathBuf, Context>,
        dir: &Path,
    ) -> Result<&'m mut Context, ContextError> {
        if !contexts.contains_key(dir) {
            let cx = Context {
                ignore: Ignore::load(dir)?,
                memo: HashMemo::load(self.store, dir),
            };
            contexts.insert(dir.to_owned(), cx);
        }
        Ok(contexts.get_mut(dir).expect("just inserted"))
    }

    /// Saves every memo. A memo that cannot be saved only costs rereading next time.
    pub fn save(&self) {
        for cx in self.contexts.lock().expect("sources lock").values() {
            let _ = cx.memo.save(self.store);
        }
    }
}
