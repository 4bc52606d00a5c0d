//! The `catchd` binary: parse the command line, set up logging, run.

use clap::Parser;

/// Big tables in huge pages, the rest from the system allocator (see `catchd::hugepages`).
#[global_allocator]
static ALLOC: catchd::hugepages::HugePageAlloc = catchd::hugepages::HugePageAlloc;

fn main() -> std::process::ExitCode {
    let cli = catchd::cli::Cli::parse();
    catchd::cli::init_tracing(cli.verbose);
    catchd::cli::main(cli)
}
