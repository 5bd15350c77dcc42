//! Layer apply: the fuzz input is a layer blob (a tar, or a gzip or zstd stream of one: the
//! media type is left empty so `apply_layer` detects it from the magic bytes), applied into
//! a fresh, empty layer dir above a fixed lower layer dir. After each input, whether it was
//! applied or refused, nothing outside the layer dir may have changed (SECURITY.md G1): the
//! victim folder beside it (also the working directory, to catch a path resolved from the
//! cwd) stays empty, the lower layer stays as it was, and the scratch folder holds nothing
//! new. Needs root for devices, owners and `trusted.*` xattrs, as kiln does.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_layer::{apply_layer, ApplyLimits};
use libfuzzer_sys::fuzz_target;

struct Scratch {
    base: PathBuf,
    root: PathBuf,
    victim: PathBuf,
    lower: PathBuf,
    lower_state: BTreeMap<PathBuf, String>,
    limits: ApplyLimits,
}

/// Every path below `dir` with its type, mode, owner, size, link count, mtime and target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, top: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read a scratch folder")
            .map(|e| e.expect("a scratch folder entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).expect("stat a scratch entry");
            let link = fs::read_link(&path).ok();
            out.insert(
                path.strip_prefix(top).unwrap().to_owned(),
                format!(
                    "{:o} {}:{} {} {} {}.{} {:?}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.size(),
                    meta.nlink(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    link
                ),
            );
            if meta.is_dir() {
                walk(&path, top, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        // tmpfs when there is one: faster, and it keeps trusted.* xattrs.
        let tmp = std::env::var_os("KILN_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let base = tmp.join(format!("kiln-fuzz-layer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let victim = base.join("victim");
        let lower = base.join("lower");
        fs::create_dir_all(&victim).unwrap();
        // A lower layer dir for hard-link copy-ups and the parents' modes and owners.
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(lower.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::hard_link(lower.join("usr/bin/tool"), lower.join("usr/bin/tool2")).unwrap();
        symlink("usr/bin", lower.join("bin")).unwrap();
        symlink("../victim", lower.join("escape")).unwrap();
        symlink(&victim, lower.join("victim")).unwrap();
        if unsafe { libc_geteuid() } != 0 {
            eprintln!("layer_apply: not root: devices, owners and trusted.* xattrs will fail");
        }
        // Relative paths resolved from the working directory would land in the victim.
        std::env::set_current_dir(&victim).unwrap();
        Scratch {
            root: base.join("root"),
            lower_state: snapshot(&lower),
            base,
            victim,
            lower,
            limits: ApplyLimits {
                max_entries: 512,
                max_bytes: 16 << 20,
                max_path_len: 4096,
                max_header_bytes: 64 << 10,
                max_ratio: 1000,
                ratio_grace: 1 << 20,
            },
        }
    })
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    fs::create_dir(&s.root).expect("a fresh layer dir");
    let mut blob = data;
    let _ = apply_layer(
        &mut blob,
        "",
        &s.root,
        std::slice::from_ref(&s.lower),
        &s.limits,
    );
    let escaped: Vec<_> = fs::read_dir(&s.victim)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        escaped.is_empty(),
        "written outside the layer dir: {escaped:?}"
    );
    let mut names: Vec<_> = fs::read_dir(&s.base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lower", "root", "victim"],
        "new entries beside the layer dir"
    );
    assert!(
        snapshot(&s.lower) == s.lower_state,
        "the lower layer dir changed"
    );
    fs::remove_dir_all(&s.root).expect("remove the layer dir");
});
