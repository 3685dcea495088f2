//! `blocktorrent`: run a member node, set up a consortium, and talk to a running node.
//!
//! Every command prints one clear sentence to stderr on failure and exits 1 (2 for usage
//! errors); `--json` prints one JSON object on stdout.

mod bench;
mod cli;
mod client;
mod cluster;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.command);
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
