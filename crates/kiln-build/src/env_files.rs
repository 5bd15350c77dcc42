//! The spec's `run: env_file:` is read when the image is built, and its variables are
//! stored with the tag at the start of `run: env` (the spec's own `env:` then wins, as
//! `-e` wins over `--env-file`).
//!
//! Why at build time and not when the container runs: the stored `run:` defaults travel
//! with a tag (`kiln tag`) and may come from elsewhere, and a stored host path that
//! `kiln run` read would let an image's settings read any host file into a container it
//! controls. Read here, only the user's own spec names files, the build fails at once on
//! a missing or malformed one, and `kiln run` reads nothing from the host for them. A
//! changed env file takes a `kiln build` to apply (every step is cached then).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use kiln_spec::values::{self, MAX_ENV_FILE};
use kiln_spec::RunDefaults;

use super::{host_file, BuildError};

/// `run` as it is stored: the variables of its env files (in order; a bare `NAME` takes
/// kiln build's value and is left out without one) before its `env`, and no file names.
pub(crate) fn stored_run_defaults(
    run: &RunDefaults,
    environment: &HashMap<OsString, OsString>,
) -> Result<RunDefaults, BuildError> {
    if run.env_file.is_empty() {
        return Ok(run.clone());
    }
    let mut env = Vec::new();
    for path in &run.env_file {
        env.extend(read(path, environment)?);
    }
    env.extend(run.env.iter().cloned());
    Ok(RunDefaults {
        env,
        env_file: Vec::new(),
        ..run.clone()
    })
}

fn read(
    path: &Path,
    environment: &HashMap<OsString, OsString>,
) -> Result<Vec<(String, String)>, BuildError> {
    let fail = |line: Option<usize>, message: String, hint: Option<String>| BuildError::EnvFile {
        path: path.to_owned(),
        line,
        message,
        hint,
    };
    let mut text = String::new();
    host_file::open_regular(path)
        .map_err(|e| fail(None, e.to_string(), None))?
        .take(MAX_ENV_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(None, super::io_reason(&e), None))?;
    if text.len() as u64 > MAX_ENV_FILE {
        let message = format!("larger than {} KiB", MAX_ENV_FILE >> 10);
        return Err(fail(None, message, None));
    }
    let entries =
        values::env_file(&text).map_err(|(line, e)| fail(Some(line), e.message, e.hint))?;
    Ok(entries
        .into_iter()
        .filter_map(|(name, value)| match value {
            Some(v) => Some((name, v)),
            None => environment
                .get(std::ffi::OsStr::new(&name))
                .map(|v| (name.clone(), v.to_string_lossy().into_owned())),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_come_before_env_and_are_not_stored_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.env");
        std::fs::write(&file, "# app\nA=file\nB=file\nFROM_BUILD\nNOT_SET\n").unwrap();
        let run = RunDefaults {
            env_file: vec![file.clone()],
            env: vec![("B".into(), "spec".into())],
            ..Default::default()
        };
        let environment = HashMap::from([("FROM_BUILD".into(), "kiln".into())]);
        let stored = stored_run_defaults(&run, &environment).unwrap();
        let pairs: Vec<(&str, &str)> = stored
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("A", "file"),
                ("B", "file"),
                ("FROM_BUILD", "kiln"),
                ("B", "spec")
            ]
        );
        assert!(stored.env_file.is_empty());

        std::fs::write(&file, "A=1\n=2\n").unwrap();
        let err = stored_run_defaults(&run, &environment).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("app.env:2: no variable name before the ="),
            "{err}"
        );
        let missing = RunDefaults {
            env_file: vec![dir.path().join("missing.env")],
            ..Default::default()
        };
        let err = stored_run_defaults(&missing, &environment).unwrap_err();
        assert!(err.to_string().starts_with("env_file "), "{err}");
    }
}
