//! `shardctl`: the shardnode admin CLI (devices, agents, clusters, objects).

use std::process::ExitCode;

use clap::Parser;
use shardnode_tools::shardctl::{exit, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Format(args) => shardnode_tools::shardctl::format::run(args),
        Command::Inspect(args) => shardnode_tools::shardctl::inspect::run(args),
        Command::Fsck(args) => shardnode_tools::shardctl::fsck::run(args),
        Command::Scrub(args) => shardnode_tools::shardctl::scrub::run(args),
        Command::Status(args) => shardnode_tools::shardctl::status::run(args),
        Command::Cluster(args) => shardnode_tools::shardctl::cluster::run(args),
        Command::Object(args) => shardnode_tools::shardctl::object::run(args),
        Command::Repairs(args) => shardnode_tools::shardctl::repairs::run(args),
        Command::Completions(args) => shardnode_tools::shardctl::docs::completions(args),
        Command::Man(args) => shardnode_tools::shardctl::docs::man(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the chain of causes joined, never a backtrace.
            eprintln!("shardctl: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
