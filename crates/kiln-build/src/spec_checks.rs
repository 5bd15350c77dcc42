//! Checks of a parsed spec that need more than the `spec` module may know (it uses no
//! other module): that `image:` and `from:` are valid image references, whose grammar is
//! the store's, and that every secret's file or variable exists. Each problem is located in
//! the spec like the spec's own (`kiln.yaml:7:11: …`), and all of them are reported
//! together.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::cache_and_secrets::secret_file_error;
use super::host_file;
use kiln_spec::{From, Location, SecretSource, Spec, SpecError, StepKind};
use kiln_store::reference::DOCKER_HUB;
use kiln_store::Reference;

/// `image:` and every stage's `from:` that names an image must parse as references.
pub(super) fn references(spec: &Spec, shown: &Path) -> Result<(), SpecError> {
    let mut problems = Vec::new();
    if let (Some(image), Some(at)) = (&spec.image, spec.image_location) {
        if let Err(e) = Reference::local(image) {
            problems.push(problem(shown, at, e, Some("e.g. image: hello:latest")));
        }
    }
    for stage in &spec.stages {
        if let From::Image(name) = &stage.from {
            if let Err(e) = Reference::parse(name, DOCKER_HUB) {
                let hint =
                    "e.g. from: alpine:3.20, or scratch, oci:PATH, rootfs:PATH or an earlier stage";
                problems.push(problem(shown, stage.from_location, e, Some(hint)));
            }
        }
    }
    report(problems)
}

/// Every secret's source file and variable must exist when the build starts, so that a
/// build fails before its first step rather than at the step that needs the secret. The
/// problems carry no hint of their own: [`super::BuildError::Secret`] has one for all.
pub(super) fn secrets(
    spec: &Spec,
    shown: &Path,
    environment: &HashMap<OsString, OsString>,
) -> Result<(), SpecError> {
    let secrets = spec
        .stages
        .iter()
        .flat_map(|stage| &stage.steps)
        .filter_map(|step| match &step.kind {
            StepKind::Run(run) => Some(&run.secrets),
            _ => None,
        })
        .flatten();
    let mut problems = Vec::new();
    for secret in secrets {
        let message = match &secret.source {
            SecretSource::File(path) => match host_file::open_regular(path) {
                Ok(_) => continue,
                Err(why) => secret_file_error(&secret.id, path, why).to_string(),
            },
            SecretSource::Env(var) if !environment.contains_key(OsStr::new(var)) => format!(
                "secret {:?}: environment variable {var} is not set",
                secret.id
            ),
            SecretSource::Env(_) => continue,
        };
        // What to do is the same for every one: the build says it once, as a hint.
        problems.push(problem(shown, secret.location, message, None));
    }
    report(problems)
}

fn problem(shown: &Path, at: Location, message: impl ToString, hint: Option<&str>) -> SpecError {
    SpecError {
        file: shown.to_path_buf(),
        location: Some(at),
        message: message.to_string(),
        hint: hint.map(str::to_owned),
        more: Vec::new(),
    }
}

/// The problems, in file order, as one error carrying the others.
fn report(mut problems: Vec<SpecError>) -> Result<(), SpecError> {
    problems.sort_by_key(|p| p.location.map(|at| (at.line, at.column)));
    let mut problems = problems.into_iter();
    match problems.next() {
        None => Ok(()),
        Some(mut first) => {
            first.more = problems.collect();
            Err(first)
        }
    }
}
