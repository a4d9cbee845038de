//! `shardbench`: a fio-style benchmark of the shardnode device engine.
//! fio's option names, semantics and output (normal and JSON) for what it
//! supports, so every performance claim is a ratio to fio measured the
//! same way.

pub mod agent;
pub mod hist;
pub mod options;
pub mod report;
pub mod run;
pub mod store;

use options::{Invocation, OutputFormat};

/// Runs every job in order (as fio with `stonewall`) and prints the report.
pub fn run(invocation: &Invocation) -> anyhow::Result<String> {
    let mut results = Vec::new();
    for spec in &invocation.jobs {
        let threads = match spec.target {
            options::Target::Device => run::run_job(spec)?,
            options::Target::Store => store::run_job(spec)?,
            options::Target::Agent => agent::run_job(spec)?,
        };
        if spec.group_reporting {
            let mut merged = run::JobResult { name: spec.name.clone(), ..run::JobResult::default() };
            for t in &threads {
                merged.merge(t);
            }
            results.push((spec.clone(), merged));
        } else {
            results.extend(threads.into_iter().map(|t| (spec.clone(), t)));
        }
    }
    Ok(match invocation.output_format {
        OutputFormat::Normal => report::normal_report(&results),
        OutputFormat::Json => serde_json::to_string_pretty(&report::json_report(&results))? + "\n",
    })
}
