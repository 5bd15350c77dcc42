//! Docker's security-option words (`seccomp=unconfined`, `seccomp=PROFILE.json`,
//! `no-new-privileges[=true|false]`) → [`SecurityOptions`], and the checks a seccomp
//! profile gets before anything starts.
//!
//! Apart from `confine` because these read files and compile BPF, which a build step's
//! confinement never needs: a profile is compiled once here so that a bad one is an error
//! naming its field before a container dir exists, not a failed start.

use std::io::Read;
use std::path::Path;

use kiln_runtime::seccomp::SeccompProgram;
use kiln_runtime::{Confinement, SeccompPolicy};

use super::confine::SecurityOptions;
use super::error::{ContainerError, Result};

/// The most bytes of a seccomp profile kiln reads (Docker's default profile is ~20 KiB).
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// Reads `options` in order (a later one wins); a profile file is read now.
pub(crate) fn security_options(options: &[String]) -> Result<SecurityOptions> {
    let mut parsed = SecurityOptions::default();
    for opt in options {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map_or((opt.as_str(), None), |(k, v)| (k, Some(v)));
        match (key, value) {
            ("seccomp", Some("unconfined")) => parsed.seccomp_unconfined = true,
            ("seccomp", Some(path)) if !path.is_empty() => {
                parsed.seccomp_profile = Some(read_seccomp_profile(Path::new(path))?)
            }
            ("no-new-privileges", None | Some("true")) => parsed.no_new_privileges = Some(true),
            ("no-new-privileges", Some("false")) => parsed.no_new_privileges = Some(false),
            _ => return Err(ContainerError::SecurityOption(opt.clone())),
        }
    }
    Ok(parsed)
}

/// A profile's bytes; a relative path is taken from the current directory.
fn read_seccomp_profile(path: &Path) -> Result<Vec<u8>> {
    let unreadable = |source| ContainerError::SeccompProfileUnreadable {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(ContainerError::SeccompProfileNotAFile(path.to_owned()));
    }
    let mut json = Vec::new();
    file.take(MAX_SECCOMP_PROFILE + 1)
        .read_to_end(&mut json)
        .map_err(unreadable)?;
    Ok(json)
}

/// Compiles the confinement's seccomp profile, if it has one, and returns the syscall names
/// it skipped because this machine does not have them (runc skips them too).
pub(crate) fn check_seccomp_profile(confinement: &Confinement) -> Result<Vec<String>> {
    let SeccompPolicy::Profile(json) = &confinement.seccomp else {
        return Ok(Vec::new());
    };
    let bounding = confinement.capabilities.bounding;
    let (_, skipped) = SeccompProgram::from_docker_profile(json, bounding)
        .map_err(ContainerError::SeccompProfile)?;
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn docker_words_are_read_in_order() {
        let parsed =
            security_options(&words(&["seccomp=unconfined", "no-new-privileges:false"])).unwrap();
        assert!(parsed.seccomp_unconfined);
        assert_eq!(parsed.no_new_privileges, Some(false));
        let parsed = security_options(&words(&["no-new-privileges"])).unwrap();
        assert_eq!(parsed.no_new_privileges, Some(true));
    }

    #[test]
    fn unknown_words_and_missing_profiles_are_errors() {
        assert!(matches!(
            security_options(&words(&["apparmor=unconfined"])),
            Err(ContainerError::SecurityOption(_))
        ));
        assert!(matches!(
            security_options(&words(&["seccomp="])),
            Err(ContainerError::SecurityOption(_))
        ));
        assert!(matches!(
            security_options(&words(&["seccomp=/no/such/profile.json"])),
            Err(ContainerError::SeccompProfileUnreadable { .. })
        ));
        assert!(matches!(
            security_options(&words(&["seccomp=/"])),
            Err(ContainerError::SeccompProfileNotAFile(_))
        ));
    }
}
