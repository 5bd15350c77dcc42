//! Times hashing a build context the way a `copy: .` step's cache key needs it, isolated
//! from the rest of a build: the first pass (memo as found in the store), then the second
//! pass as a new `kiln build` would make it (memo loaded from the store, walk, listing
//! digest), repeated to give a median. Used by bench/context-hash.sh.
//!
//! Usage: cargo run --release --example context_hash -- CONTEXT STORE [RUNS]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_build::context::{copy_sources_digest, ContextDir, HashMemo, Ignore, SourcesDigest};
use kiln_store::Store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: context_hash CONTEXT STORE [RUNS]";
    let context = PathBuf::from(args.next().ok_or(usage)?);
    let store = Store::open(&PathBuf::from(args.next().ok_or(usage)?))?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(10);

    let (first, took) = pass(&store, &context)?;
    report("first pass", &first, took);
    let mut times = Vec::with_capacity(runs);
    let mut last = first.clone();
    for _ in 0..runs {
        let (d, took) = pass(&store, &context)?;
        if d.digest != first.digest {
            return Err("the digest changed between passes".into());
        }
        times.push(took);
        last = d;
    }
    times.sort();
    report(
        &format!("second pass, median of {runs}"),
        &last,
        times[runs / 2],
    );
    println!(
        "second_pass_ms {:.1}",
        times[runs / 2].as_secs_f64() * 1000.0
    );
    Ok(())
}

/// One hashing of the whole context, including loading and saving the memo.
fn pass(
    store: &Store,
    context: &std::path::Path,
) -> Result<(SourcesDigest, Duration), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let dir = ContextDir::open(context)?;
    let ignore = Ignore::load(&dir)?;
    let mut memo = HashMemo::load(store, &dir);
    let digest = copy_sources_digest(&dir, &[".".to_string()], &ignore, &mut memo)?;
    memo.save(store)?;
    Ok((digest, started.elapsed()))
}

fn report(what: &str, d: &SourcesDigest, took: Duration) {
    println!(
        "{what}: {:.1} ms, {} entries, {} files read ({} MB), digest {}",
        took.as_secs_f64() * 1000.0,
        d.files.len(),
        d.files_read,
        d.bytes_read / 1_000_000,
        d.digest.short()
    );
}
