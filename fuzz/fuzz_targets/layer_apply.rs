//! Layer apply: the fuzz input is a layer blob (a tar, or a gzip or zstd stream of one: the
//! media type is left empty so `apply_layer` detects it from the magic bytes), applied into
//! a fresh, empty layer dir above a fixed lower layer dir. After each input, whether it was
//! applied or refused, nothing outside the layer dir may have changed (SECURITY.md G1): the
//! victim folder beside it stays empty, the lower layer stays as it was, the scratch folder
//! and the working directory hold nothing new (a path resolved from the cwd would add to
//! it), and the process has the same open fds as before. Needs root for devices, owners
//! and `trusted.*` xattrs, as kiln does.
//! Uncompressed input whose last byte is even gets its tar header checksums made right
//! first (see `fix_checksums`), so that mutations of the headers are not all refused by the
//! checksum check.
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
    /// The working directory's entries: a path resolved from the cwd would add one.
    cwd_state: Vec<std::ffi::OsString>,
    limits: ApplyLimits,
}

fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

fn open_fds() -> Vec<(String, Option<PathBuf>)> {
    let mut fds: Vec<_> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = fs::read_link(e.path()).ok();
            Some((e.file_name().to_string_lossy().into_owned(), target))
        })
        .collect();
    fds.sort();
    // The fd read_dir had open is gone by now.
    fds.retain(|(n, _)| Path::new(&format!("/proc/self/fd/{n}")).exists());
    fds
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
        // Folders left by earlier runs whose process is gone (libFuzzer ends with exit()).
        for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("kiln-fuzz-layer-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
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
        Scratch {
            cwd_state: names(Path::new(".")),
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

/// `data` with the checksum of every tar header block it can find made right, so that
/// mutations reach past the checksum check: headers are found as a reader finds them
/// (a header, its data rounded up to 512 bytes, the next header, until a zero block).
fn fix_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while at + 512 <= out.len() {
        let block = &mut out[at..at + 512];
        if block.iter().all(|b| *b == 0) {
            break;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&block[124..136])
            .ok()
            .and_then(|f| u64::from_str_radix(f.trim_matches(|c| c == ' ' || c == '\0'), 8).ok())
            .unwrap_or(0);
        let data_blocks = match block[156] {
            b'0' | b'\0' | b'7' | b'x' | b'g' | b'L' | b'K' => size.div_ceil(512),
            _ => 0,
        };
        at = at
            .saturating_add(512)
            .saturating_add(usize::try_from(data_blocks.saturating_mul(512)).unwrap_or(usize::MAX));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    fs::create_dir(&s.root).expect("a fresh layer dir");
    // Taken for each input: libFuzzer itself opens fds between inputs (the symbolizer's
    // pipes when it names a newly covered function).
    let fds = open_fds();
    // An even last byte (a tar ends in zeros) asks for tar checksums to be made right,
    // an odd one feeds the bytes as they are (compressed streams always are).
    let compressed = data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let fixed;
    let mut blob = if !compressed && data.last().is_some_and(|b| b & 1 == 0) {
        fixed = fix_checksums(data);
        &fixed[..]
    } else {
        data
    };
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
    assert_eq!(
        names(&s.base),
        ["lower", "root", "victim"],
        "new entries beside the layer dir"
    );
    assert_eq!(
        names(Path::new(".")),
        s.cwd_state,
        "new entries in the working directory"
    );
    assert_eq!(
        open_fds(),
        fds,
        "apply_layer leaked, closed or replaced an fd"
    );
    assert!(
        snapshot(&s.lower) == s.lower_state,
        "the lower layer dir changed"
    );
    fs::remove_dir_all(&s.root).expect("remove the layer dir");
});
