//! `registry-mock` binary: not yet implemented (see the crate docs).

fn main() {
    eprintln!("registry-mock: not implemented yet (filled by a later issue)");
    std::process::exit(2);
}
