//! The `kiln` binary: command-line parsing, printing, the environment and exit codes. Everything
//! else is in the library crates below it (see ARCHITECTURE.md).

mod cli;

fn main() {
    std::process::exit(cli::main());
}
