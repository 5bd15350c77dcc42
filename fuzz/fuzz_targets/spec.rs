//! The spec parser: `kiln_spec::parse` on UTF-8 input (YAML → tree → typed spec, with
//! substitution and every check), `kiln_spec::load` on input that is not UTF-8 (the
//! reader's own error path). Errors are rendered, a spec's stages walked.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A file for `load`, in a folder of this process.
fn spec_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = std::env::var_os("KILN_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("kiln-fuzz-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder for the spec target");
        dir.join("kiln.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/fuzz/ctx/kiln.yaml");
    let result = match std::str::from_utf8(data) {
        Ok(text) => kiln_spec::parse(text, file, &[("GREETING".into(), "hi".into())]),
        Err(_) => {
            let path = spec_file();
            std::fs::write(path, data).expect("write the spec file");
            kiln_spec::load(path, &[])
        }
    };
    match result {
        Ok(mut spec) => {
            let last = spec.final_stage().name.clone();
            for stage in &spec.stages {
                let _ = stage.dependencies();
                assert!(spec.stage_index(&stage.name).is_some());
            }
            let first = spec.stages[0].name.clone();
            spec.truncate_to(&first)
                .expect("truncating to an existing stage");
            assert!(spec.truncate_to(&last).is_err() || first == last);
        }
        Err(err) => {
            for problem in err.all() {
                let _ = problem.to_string();
            }
        }
    }
});
