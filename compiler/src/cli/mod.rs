//! `kiln`'s commands. Conventions follow cargo and rustc: `error: ...` on
//! stderr followed by the cause chain, exit status 1 for a bad model or input
//! and 2 for a bad command line, logs on stderr controlled by `-v` or `KILN_LOG`.

mod bench;
mod compile;
mod convert;
mod inspect;
mod model;
mod run;
pub mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Ahead-of-time compiler for ONNX models",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); KILN_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a model's inputs, outputs, op histogram, parameters and MACs
    Inspect(inspect::Args),
    /// Run a model on the reference backend and write its outputs as .npy
    Run(run::Args),
    /// Time the native code generated for this machine (median, p10, p90, GFLOP/s)
    Bench(bench::Args),
    /// Compile a model ahead of time for a target triple (object or C + header)
    Compile(compile::Args),
    /// Convert between ONNX and kiln's text (.kiln) and binary (.kilnb) forms
    Convert(convert::Args),
}

/// Why a command failed; decides the exit status.
#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong (exit 2, like clap's own errors).
    Usage(String),
    /// The model, an input, or running it failed (exit 1).
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Error(e)
    }
}

pub type CmdResult = Result<(), Failure>;

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::Convert(a) => convert::main(a),
        Command::Compile(a) => compile::main(a),
        Command::Bench(a) => bench::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            eprintln!("\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(Failure::Error(e)) => {
            eprintln!("error: {e}");
            let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for c in causes {
                    for line in c.lines() {
                        eprintln!("    {line}");
                    }
                }
            }
            ExitCode::from(1)
        }
    }
}
