//! `shardbench`: a fio-style benchmark of the shardnode device engine.
//! fio's option names, semantics and output (normal and JSON) for what it
//! supports, so every performance claim is a ratio to fio measured the
//! same way.

pub mod agent;
pub mod crash;
pub mod help;
pub mod hist;
pub mod options;
pub mod progress;
pub mod report;
pub mod run;
pub mod store;

use std::sync::Arc;

use options::{Eta, Invocation, JobSpec, OutputFormat, Target};
use run::{JobResult, Progress};

/// fio's reporting groups: a job with `stonewall` waits for every job
/// before it and starts a new group; the jobs of a group run at once.
pub fn groups(jobs: &[JobSpec]) -> Vec<&[JobSpec]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, job) in jobs.iter().enumerate() {
        if job.stonewall && i > start {
            out.push(&jobs[start..i]);
            start = i;
        }
    }
    if start < jobs.len() {
        out.push(&jobs[start..]);
    }
    out
}

/// Creates what the jobs of a group need before any of them starts, one
/// job after another as fio lays out its files: jobs sharing a file must
/// not each find it half written by the other.
fn prepare(group: &[JobSpec]) -> anyhow::Result<()> {
    for spec in group {
        let path = || spec.filename.as_deref().expect("validated: device and store jobs have a filename");
        match spec.target {
            Target::Device => run::prepare(path(), spec)?,
            Target::Store => store::prepare(path(), spec)?,
            Target::Agent | Target::Objects => {}
        }
    }
    Ok(())
}

fn run_one(spec: &JobSpec, progress: &Arc<Progress>) -> anyhow::Result<Vec<JobResult>> {
    match spec.target {
        Target::Device => run::run_job(spec, progress),
        Target::Store => store::run_job(spec, progress),
        Target::Agent | Target::Objects => agent::run_job(spec, progress),
    }
}

/// Runs every group in order, the jobs of a group at the same time, and
/// returns the report (and whether every check passed: a crash test can
/// find lost or wrong data).
pub fn run(invocation: &Invocation) -> anyhow::Result<(String, bool)> {
    if invocation.jobs.iter().any(|j| j.crash_test.is_some()) {
        return crash::run(invocation);
    }
    let show = match invocation.eta {
        Eta::Always => true,
        Eta::Never => false,
        Eta::Auto => std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let progress = Arc::new(Progress { shown: show, ..Progress::default() });
    let mut results = Vec::new();
    for (groupid, group) in groups(&invocation.jobs).into_iter().enumerate() {
        prepare(group)?;
        let ticker = show.then(|| progress::Ticker::start(group, Arc::clone(&progress)));
        let outcomes: Vec<anyhow::Result<Vec<JobResult>>> = std::thread::scope(|s| {
            let handles: Vec<_> = group.iter().map(|spec| s.spawn(|| run_one(spec, &progress))).collect();
            handles.into_iter().map(|h| h.join().expect("job thread panicked")).collect()
        });
        if let Some(t) = ticker {
            t.stop();
        }
        for (spec, threads) in group.iter().zip(outcomes) {
            let mut threads = threads?;
            for t in &mut threads {
                t.groupid = groupid as u32;
            }
            if spec.group_reporting {
                let mut merged = JobResult { name: spec.name.clone(), groupid: groupid as u32, ..JobResult::default() };
                for t in &threads {
                    merged.merge(t);
                }
                results.push((spec.clone(), merged));
            } else {
                results.extend(threads.into_iter().map(|t| (spec.clone(), t)));
            }
        }
    }
    let text = match invocation.output_format {
        OutputFormat::Normal => report::normal_report(&results),
        OutputFormat::Json => serde_json::to_string_pretty(&report::json_report(&results, false))? + "\n",
        OutputFormat::JsonPlus => serde_json::to_string_pretty(&report::json_report(&results, true))? + "\n",
    };
    Ok((text, true))
}
