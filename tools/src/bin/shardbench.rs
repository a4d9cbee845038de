//! `shardbench`: fio-style benchmark of the shardnode device engine, store and agent.

use std::process::ExitCode;

use shardnode_tools::bench::{self, options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", bench::help::HELP);
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version") {
        println!("shardbench-{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let invocation = match options::parse_args(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("shardbench: {e}\n{}\n(shardbench --help describes every option)", options::USAGE);
            return ExitCode::from(2);
        }
    };
    if let Ok(which) = std::env::var(bench::crash::CHILD_ENV) {
        // The child of a kill test: it runs until it is killed.
        if let Err(e) = bench::crash::child(&invocation, &which) {
            eprintln!("shardbench: {e:#}");
        }
        return ExitCode::FAILURE;
    }
    match bench::run(&invocation) {
        Ok((text, passed)) => {
            print!("{text}");
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("shardbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
