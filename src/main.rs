//! The `catchd` binary: parse the command line, set up logging, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = catchd::cli::Cli::parse();
    catchd::cli::init_tracing(cli.verbose);
    catchd::cli::main(cli)
}
