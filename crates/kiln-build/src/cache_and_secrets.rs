//! `cache:` and `secrets:` of run steps, turned into the sandbox's step mounts (which
//! `runtime::step_mounts` mounts in the step's namespace).
//!
//! A cache mount is a directory of the store (`$ROOT/cache/mounts/<id>`) keyed by the spec
//! file and the target path, so every build of the same spec, in any stage, finds what the
//! last one left there (a package manager's download cache, a compiler cache). Neither a
//! cache mount's content nor a secret's value is part of a step's key or layer: the runtime
//! mounts them over the step's root and removes their mount points from the upper dir.
//! A secret is read here, at the step that uses it, and goes to the runtime in memory only;
//! errors name the secret's id and where it was expected, never its value. A secret file
//! must be a regular file, checked before it is opened for reading (`host_file`): a FIFO
//! or a device would block the build or never end.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;

use super::host_file::{self, Refused};
use super::{SecretError, StepError};
use kiln_runtime::StepMount;
use kiln_spec::{RunStep, SecretSource};
use kiln_store::{Digest, Store};

/// The mounts of a run step.
pub(super) fn step_mounts(
    store: &Store,
    spec_file: &Path,
    run: &RunStep,
    environment: &HashMap<OsString, OsString>,
) -> Result<Vec<StepMount>, StepError> {
    let mut mounts = Vec::with_capacity(run.cache.len() + run.secrets.len());
    for target in &run.cache {
        let source = store
            .cache_mount_dir(&cache_mount_id(spec_file, target))
            .map_err(|source| StepError::CacheMount {
                target: target.clone(),
                source,
            })?;
        mounts.push(StepMount::Cache {
            source,
            target: target.clone(),
        });
    }
    for secret in &run.secrets {
        let content = match &secret.source {
            SecretSource::File(path) => read_secret_file(&secret.id, path)?,
            SecretSource::Env(var) => environment
                .get(OsStr::new(var))
                .cloned()
                .ok_or_else(|| SecretError::EnvUnset {
                    id: secret.id.clone(),
                    var: var.clone(),
                })?
                .into_encoded_bytes(),
        };
        mounts.push(StepMount::Secret {
            content: content.into(),
            target: secret.target.clone(),
        });
    }
    Ok(mounts)
}

/// The content of a secret's source file, which must be a regular file.
fn read_secret_file(id: &str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let mut content = Vec::new();
    host_file::open_regular(path)
        .and_then(|mut file| file.read_to_end(&mut content).map_err(Refused::Io))
        .map_err(|e| secret_file_error(id, path, e))?;
    Ok(content)
}

/// What is wrong with a secret's source file, in words: "does not exist" for a missing one.
pub(super) fn secret_file_error(id: &str, path: &Path, why: Refused) -> SecretError {
    let (id, path) = (id.to_owned(), path.to_owned());
    match why {
        Refused::Kind(kind) => SecretError::NotRegular { id, path, kind },
        Refused::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            SecretError::Missing { id, path }
        }
        Refused::Io(source) => SecretError::Unreadable { id, path, source },
    }
}

/// Cache mounts are shared by every build of one spec file with the same target path.
fn cache_mount_id(spec_file: &Path, target: &str) -> Digest {
    let spec = std::fs::canonicalize(spec_file).unwrap_or_else(|_| spec_file.to_path_buf());
    let mut text = b"cache-mount\0".to_vec();
    text.extend_from_slice(spec.as_os_str().as_encoded_bytes());
    text.push(0);
    text.extend_from_slice(target.trim_end_matches('/').as_bytes());
    Digest::of_bytes(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ids_depend_on_spec_and_target_only() {
        let a = cache_mount_id(Path::new("/x/kiln.yaml"), "/var/cache/apt");
        assert_eq!(
            a,
            cache_mount_id(Path::new("/x/kiln.yaml"), "/var/cache/apt/")
        );
        assert_ne!(
            a,
            cache_mount_id(Path::new("/y/kiln.yaml"), "/var/cache/apt")
        );
        assert_ne!(
            a,
            cache_mount_id(Path::new("/x/kiln.yaml"), "/var/cache/pip")
        );
    }
}
