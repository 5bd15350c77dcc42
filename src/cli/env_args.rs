//! `-e K=V`, `-e K` and `--env-file FILE`, read as docker reads them, for `kiln run` and
//! `kiln exec` alike. Here, in the binary, because a bare `K` takes kiln's own value and
//! the library never reads the process environment.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Failure;

use kiln_spec::values::MAX_ENV_FILE;

/// The variables of every `--env-file` (in order), then of every `-e` (a later one wins).
/// A bare `K` takes kiln's value of K and is left out when kiln has none.
pub fn environment(
    env_files: &[PathBuf],
    env: &[String],
) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for file in env_files {
        out.extend(read_env_file(file)?);
    }
    out.extend(env.iter().filter_map(|e| entry(e)));
    Ok(out)
}

/// `K=V` as it is, or a bare `K` with kiln's own value.
fn entry(text: &str) -> Option<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) => Some((k.to_owned(), v.to_owned())),
        None => std::env::var(text).ok().map(|v| (text.to_owned(), v)),
    }
}

/// Docker's env-file format (`kiln_spec::values::env_file`, which a spec's `env_file:`
/// is read with too); a bare `K` takes kiln's own value and is left out without one.
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, Failure> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ENV_FILE + 1).read_to_string(&mut text))
        .map_err(|e| Failure::user(format!("--env-file {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_ENV_FILE {
        return Err(Failure::user(format!(
            "--env-file {}: larger than {} KiB",
            path.display(),
            MAX_ENV_FILE >> 10
        )));
    }
    let entries = kiln_spec::values::env_file(&text).map_err(|(line, e)| {
        Failure::user(format!("{}:{line}: {}", path.display(), e.message)).hint(e.hint)
    })?;
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some((k, v)),
            None => std::env::var(&k).ok().map(|v| (k, v)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_come_first_and_skip_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.env");
        std::fs::write(
            &file,
            "# settings\n\nA=1\n  B=two words \nC=\"quoted\"\nKILN_TEST_SURELY_UNSET\n",
        )
        .unwrap();
        let env = environment(std::slice::from_ref(&file), &["A=3".into()]).unwrap();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "two words "),
                ("C", "\"quoted\""),
                ("A", "3")
            ]
        );
        std::fs::write(&file, "A=1\n=2\n").unwrap();
        let err = environment(std::slice::from_ref(&file), &[]).unwrap_err();
        assert!(
            err.message
                .ends_with("app.env:2: no variable name before the ="),
            "{}",
            err.message
        );
        std::fs::write(&file, "MY VAR=1\n").unwrap();
        let err = environment(std::slice::from_ref(&file), &[]).unwrap_err();
        assert!(
            err.message.contains("contains whitespace"),
            "{}",
            err.message
        );
        let err = environment(&[dir.path().join("missing.env")], &[]).unwrap_err();
        assert!(err.message.starts_with("--env-file "), "{}", err.message);
    }
}
