//! The `kiln` command-line tool: a thin layer over the `kiln_compiler` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
