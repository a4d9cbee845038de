//! shardbench speaks fio: its JSON has fio's field names and types (checked
//! against JSON produced by the real fio in the same test), its text output
//! has fio's lines, and the numbers it reports add up.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn shardbench(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardbench")).args(args).output().expect("run shardbench")
}

fn job_args(file: &Path, extra: &str) -> Vec<String> {
    let mut v = vec![
        "--name=t".to_owned(),
        format!("--filename={}", file.display()),
        "--size=16M".to_owned(),
        "--direct=1".to_owned(),
        "--ioengine=io_uring".to_owned(),
    ];
    v.extend(extra.split_whitespace().map(str::to_owned));
    v
}

fn ensure_fio() -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/ensure-fio");
    match Command::new(script).status() {
        Ok(s) if s.success() => true,
        other => {
            skip(&format!("fio comparison: fio is not installed and could not be installed ({other:?})"));
            false
        }
    }
}

/// Every field of `ours` exists in `fio` with the same JSON type.
fn assert_subset(ours: &Value, fio: &Value, path: &str) {
    match (ours, fio) {
        // Histogram bins are keyed by latency: the key sets differ per run.
        (Value::Object(_), Value::Object(_)) if path.rsplit('.').next() == Some("bins") => {}
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let Some(fv) = b.get(k) else { panic!("{path}.{k}: fio has no such field") };
                assert_subset(v, fv, &format!("{path}.{k}"));
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Array(_), Value::Array(_)) => {}
        _ => panic!("{path}: type differs: ours {ours}, fio {fio}"),
    }
}

#[test]
fn json_fields_match_real_fio() {
    if !ensure_fio() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("b.img");
    // json+ and a sync every 4 writes: the histogram bins, the sync
    // section and the distributions are compared too.
    let common = "--rw=randrw --bs=4k --iodepth=4 --runtime=1 --time_based --fdatasync=4 --output-format=json+";
    let fio = Command::new("fio").args(job_args(&file, common)).output().unwrap();
    assert!(fio.status.success(), "fio failed: {}", String::from_utf8_lossy(&fio.stderr));
    let fio: Value = serde_json::from_slice(&fio.stdout).expect("fio JSON");
    let ours = shardbench(&job_args(&file, common));
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    let ours: Value = serde_json::from_slice(&ours.stdout).expect("shardbench JSON");

    let (oj, fj) = (&ours["jobs"][0], &fio["jobs"][0]);
    // Everything we emit, fio emits too, with the same type (job options
    // are echoed strings in both; their key sets differ by design).
    let mut oj_cmp = oj.clone();
    oj_cmp.as_object_mut().unwrap().remove("job options");
    assert_subset(&oj_cmp, fj, "jobs[0]");
    // And the fields scripts rely on are present and meaningful.
    for dir in ["read", "write"] {
        let d = &oj[dir];
        assert!(d["iops"].as_f64().unwrap() > 0.0, "{dir} iops");
        assert!(d["bw_bytes"].as_u64().unwrap() > 0);
        assert!(d["clat_ns"]["percentile"]["99.000000"].as_u64().unwrap() > 0);
        let total = d["total_ios"].as_u64().unwrap();
        assert_eq!(d["io_bytes"].as_u64().unwrap(), total * 4096);
        assert_eq!(d["clat_ns"]["N"].as_u64().unwrap(), total);
        assert!(d["clat_ns"]["min"].as_u64() <= d["clat_ns"]["max"].as_u64());
        // json+: the histogram's buckets hold every sample.
        let bins: u64 = d["clat_ns"]["bins"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(bins, total, "{dir} bins");
    }
    // One sync per 4 writes (the last few writes may have no sync yet).
    let (writes, syncs) = (oj["write"]["total_ios"].as_u64().unwrap(), oj["sync"]["total_ios"].as_u64().unwrap());
    assert!(syncs > 0 && syncs.abs_diff(writes / 4) <= 1, "{syncs} syncs for {writes} writes");
    // The latency distribution covers every I/O.
    let share: f64 = ["latency_ns", "latency_us", "latency_ms"]
        .iter()
        .flat_map(|k| oj[*k].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>())
        .sum();
    assert!((share - 100.0).abs() < 0.5, "latency distribution sums to {share}%");
    assert!(fio["jobs"][0]["read"]["clat_ns"]["percentile"]["99.000000"].is_number());
}

#[test]
fn a_sized_job_does_exactly_one_pass_and_text_output_looks_like_fio() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("c.img");
    let o = shardbench(&job_args(&file, "--rw=write --bs=64k --iodepth=8 --output-format=json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs"][0]["write"]["io_bytes"], 16u64 << 20, "one pass over --size");
    assert_eq!(v["jobs"][0]["write"]["total_ios"], 256);
    assert_eq!(v["jobs"][0]["read"]["total_ios"], 0);

    let o = shardbench(&job_args(&file, "--rw=randread --bs=4k --iodepth=16 --numjobs=2 --group_reporting"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for want in
        ["t: (groupid=0, jobs=2)", "read: IOPS=", "clat percentiles", "99.00th=[", "Run status group 0", "READ: bw="]
    {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn psync_engine_and_mixed_ratios() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("d.img");
    let o = shardbench(&job_args(&file, "--rw=randrw --rwmixread=70 --ioengine=psync --bs=4k --output-format=json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = v["jobs"][0]["read"]["total_ios"].as_f64().unwrap();
    let w = v["jobs"][0]["write"]["total_ios"].as_f64().unwrap();
    assert_eq!(
        v["jobs"][0]["read"]["total_ios"].as_u64().unwrap() + v["jobs"][0]["write"]["total_ios"].as_u64().unwrap(),
        4096
    );
    let share = r / (r + w);
    assert!((0.65..0.75).contains(&share), "read share {share} for rwmixread=70");
}

#[test]
fn bad_options_are_named_and_refused() {
    let o = shardbench(&["--name=x".into(), "--filename=/tmp/x".into(), "--verify_fatal=1".into()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option --verify_fatal"));
    let o = shardbench(&["--name=x".into(), "--filename=/nonexistent/dir/f".into()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir/f"));
}

/// Registered buffers need locked memory: as an unprivileged user whose
/// `RLIMIT_MEMLOCK` (256 KiB) admits the ring but not an 8 MiB buffer pool,
/// the kernel refuses them, and the engine must fall back to plain reads
/// and writes and still do the whole job.
#[test]
fn registered_buffers_fall_back_when_memlock_is_refused() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("registered_buffers_fall_back_when_memlock_is_refused: needs root to run as nobody");
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = dir.path().join("f.img");
    let args = job_args(&file, "--rw=write --bs=1m --iodepth=8 --output-format=json");
    // As root: registered.
    let o = shardbench(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["engine"]["registered_buffers"], true, "{}", v["engine"]);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    // As nobody with no lockable memory: refused by the kernel, fallen back.
    let o = Command::new("prlimit")
        .args(["--memlock=262144:262144", "runuser", "-u", "nobody", "--", env!("CARGO_BIN_EXE_shardbench")])
        .args(&args)
        .output()
        .expect("prlimit and runuser (util-linux)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["engine"]["registered_buffers"], false, "{}", v["engine"]);
    assert_eq!(v["jobs"][0]["write"]["io_bytes"], 16u64 << 20);
}

#[test]
fn a_job_file_runs_its_jobs_with_the_global_section_as_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dev.img");
    let job = dir.path().join("two.fio");
    std::fs::write(
        &job,
        format!(
            "; two jobs on one file\n[global]\nfilename={}\nsize=8M\nbs=64k\nruntime=1\ntime_based\n\
             percentile_list=50:99.5\n\n\
             [writer]\nrw=write\niodepth=4\n\n[reader]\nrw=randread\nbs=4k\niodepth=8\n",
            file.display()
        ),
    )
    .unwrap();
    let o = shardbench(&["--output-format=json".to_owned(), job.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["jobname"], "writer");
    assert!(jobs[0]["write"]["io_bytes"].as_u64().unwrap() > 0);
    assert_eq!(jobs[1]["jobname"], "reader");
    assert!(jobs[1]["read"]["io_bytes"].as_u64().unwrap() > 0);
    assert!(jobs[1]["read"]["bw_bytes"].as_u64().unwrap() > 0);
    let keys: Vec<&String> = jobs[1]["read"]["clat_ns"]["percentile"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["50.000000", "99.500000"], "the job's percentile_list");

    // An unknown option is an error naming it, the file and the line.
    std::fs::write(&job, "[a]\nfilename=/tmp/x\nverify=md5\n").unwrap();
    let o = shardbench(&[job.display().to_string()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("two.fio:3") && err.contains("verify"), "{err}");
}

#[test]
fn verify_catches_a_corrupted_block() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dev.img");
    // Write every block with verify headers; the job reads them all back.
    let o = shardbench(&job_args(&file, "--rw=write --bs=16k --iodepth=8 --verify=crc32c --output-format=json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Sequential and random reads of intact blocks verify.
    let o = shardbench(&job_args(&file, "--rw=randread --bs=16k --iodepth=8 --verify=crc32c --runtime=1 --time_based"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // One flipped bit in the block at 16 KiB * 37.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    let at = 37 * 16384 + 5000;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 4], at).unwrap();
    f.sync_all().unwrap();
    let o = shardbench(&job_args(&file, "--rw=read --bs=16k --iodepth=8 --verify=crc32c"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("crc32c mismatch in the block at offset 606208"), "{err}");
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn a_random_write_pass_touches_every_block_unless_norandommap() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("m.img");
    // The random map: one sized random pass writes every block once, so a
    // whole-file read finds a verify header in every block.
    let v = json_of(&shardbench(&job_args(
        &file,
        "--rw=randwrite --bs=4k --iodepth=8 --verify=crc32c --do_verify=0 --output-format=json",
    )));
    assert_eq!(v["jobs"][0]["write"]["io_bytes"].as_u64().unwrap(), 16 << 20, "one pass over --size");
    let read = "--rw=read --bs=4k --iodepth=8 --verify=crc32c --output-format=json";
    json_of(&shardbench(&job_args(&file, read)));
    // Mixed sizes: an I/O is cut short where it would touch a block twice,
    // so the pass is still exactly --size; the job reads back what it wrote.
    let v = json_of(&shardbench(&job_args(
        &file,
        "--rw=randwrite --bsrange=4k-32k --iodepth=8 --verify=crc32c --output-format=json",
    )));
    assert_eq!(v["jobs"][0]["write"]["io_bytes"].as_u64().unwrap(), 16 << 20, "one pass over --size");
    // Read with another block size, verification names the mismatch.
    let o = shardbench(&job_args(&file, read));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("was written as") || err.contains("bad magic"), "{err}");
    // Without the map, random offsets repeat and a sized pass misses
    // blocks: the fresh file's zeros fail verification.
    std::fs::remove_file(&file).unwrap();
    let o = shardbench(&job_args(&file, "--rw=randwrite --bs=4k --iodepth=8 --verify=crc32c --norandommap"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = shardbench(&job_args(&file, read));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad magic"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn syncs_rates_and_stonewalls_do_what_fio_does() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("s.img");
    // 16 MiB in 64 KiB writes: 256 writes, a sync after every 32, and
    // end_fsync's one at the end.
    let v = json_of(&shardbench(&job_args(
        &file,
        "--rw=write --bs=64k --iodepth=4 --fdatasync=32 --end_fsync=1 --output-format=json",
    )));
    assert_eq!(v["jobs"][0]["sync"]["total_ios"], 256 / 32 + 1);
    assert_eq!(v["jobs"][0]["sync"]["lat_ns"]["N"], 256 / 32 + 1);
    // rate_iops caps the job (what it allows, not how fast the disk is).
    let v = json_of(&shardbench(&job_args(
        &file,
        "--rw=randread --bs=4k --iodepth=4 --rate_iops=400 --runtime=2 --time_based --output-format=json",
    )));
    let iops = v["jobs"][0]["read"]["iops"].as_f64().unwrap();
    assert!((300.0..=420.0).contains(&iops), "{iops} IOPS with rate_iops=400");
    // rate caps bytes: 2 MiB/s of 64 KiB reads.
    let v = json_of(&shardbench(&job_args(
        &file,
        "--rw=read --bs=64k --iodepth=2 --rate=2m --runtime=2 --time_based --output-format=json",
    )));
    let bw = v["jobs"][0]["read"]["bw_bytes"].as_f64().unwrap();
    assert!(((1.5 * 1_048_576.0)..=(2.1 * 1_048_576.0)).contains(&bw), "{bw} B/s with rate=2m");
    // Jobs run together unless stonewalled; each stonewall is a group.
    let mut args: Vec<String> = [
        format!("--filename={}", file.display()),
        "--runtime=1".to_owned(),
        "--time_based".to_owned(),
        "--name=t".to_owned(),
        "--rw=randread".to_owned(),
    ]
    .into();
    args.extend(["--name=u", "--rw=randwrite", "--name=v", "--stonewall", "--rw=read"].map(str::to_owned));
    let mut json = args.clone();
    json.push("--output-format=json".to_owned());
    let v = json_of(&shardbench(&json));
    let groups: Vec<u64> = v["jobs"].as_array().unwrap().iter().map(|j| j["groupid"].as_u64().unwrap()).collect();
    assert_eq!(groups, [0, 0, 1]);
    // The text report: each group's jobs, then one status block per group.
    let o = shardbench(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "(groupid=1, jobs=1)",
        "Run status group 0 (all jobs)",
        "Run status group 1 (all jobs)",
        "  lat (",
        "     submit    : 0=",
        "     issued rwts: total=",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn the_progress_line_shows_on_request_and_not_in_a_pipe() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("p.img");
    let o = shardbench(&job_args(&file, "--rw=randread --runtime=2 --time_based"));
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Jobs:"), "no progress line in a pipe");
    let mut args = job_args(&file, "--rw=randread --runtime=2 --time_based");
    args.insert(0, "--eta=always".to_owned());
    let o = shardbench(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.split('\r').find(|l| l.starts_with("Jobs: 1 (f=1): [r(1)][")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" IOPS][eta 00m:0"), "{line}");
}

#[test]
fn crash_tests_find_every_acknowledged_put() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for mode in ["sim", "kill"] {
        let file = dir.path().join(format!("{mode}.img"));
        let extra = format!(
            "--target=store --crash-test={mode} --crash_rounds=2 --rw=randwrite --bs=4k --iodepth=16 --size=4M --runtime=1 --output-format=json"
        );
        let mut args = job_args(&file, &extra);
        args.retain(|a| a != "--size=16M");
        let v = json_of(&shardbench(&args));
        let job = &v["crash test"][0];
        assert_eq!((job["mode"].as_str(), job["passed"].as_bool()), (Some(mode), Some(true)), "{job}");
        for round in job["rounds"].as_array().unwrap() {
            assert!(round["puts_acknowledged"].as_u64().unwrap() > 0, "{round}");
            assert_eq!(round["lost"], 0);
            assert_eq!(round["wrong"], 0);
            // Every shard ever acknowledged was checked after the crash.
            let checked = round["shards_acknowledged_intact"].as_u64().unwrap()
                + round["shards_in_flight_present"].as_u64().unwrap();
            assert!(checked > 0, "{round}");
        }
    }
}

/// A missing prerequisite: a failure under CI (`CI` set, as `.ci/run`
/// sets it: there every prerequisite must be present), else a skip said
/// on stderr.
fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "prerequisite missing under CI: {why}");
    eprintln!("SKIPPED: {why}");
}

/// The example job file that ships in benches/jobs runs as it is: every
/// job, in order, each with its figures.
#[test]
fn the_shipped_example_job_file_runs() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/jobs/store-example.fio");
    let o = Command::new(env!("CARGO_BIN_EXE_shardbench"))
        .args(["--output-format=json", example])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["jobname"].as_str().unwrap()).collect();
    assert_eq!(names, ["durable-puts", "gets", "gets-during-puts"]);
    assert!(jobs[0]["write"]["iops"].as_f64().unwrap() > 0.0);
    assert!(jobs[1]["read"]["iops"].as_f64().unwrap() > 0.0);
    assert!(jobs[2]["read"]["iops"].as_f64().unwrap() > 0.0 && jobs[2]["write"]["bw_bytes"].as_u64().unwrap() > 0);
    assert!(dir.path().join("shardbench-example.img").exists(), "the store file in the current directory");
}

/// `--help` describes every option in groups and points to the reference;
/// a bad option says what is wrong, then where help is.
#[test]
fn help_is_grouped_and_a_bad_option_points_to_it() {
    let o = Command::new(env!("CARGO_BIN_EXE_shardbench")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for group in ["Job description", "Target", "I/O type", "Block size", "Time", "Measurements and reporting"] {
        assert!(help.contains(&format!("\n{group}\n")), "no {group} group:\n{help}");
    }
    assert!(help.contains("docs/cli.md") && help.lines().all(|l| l.len() <= 120), "{help}");
    let o = Command::new(env!("CARGO_BIN_EXE_shardbench")).args(["--name=a", "--bogus=1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bogus") && err.contains("shardbench --help"), "{err}");
}

/// Runs a 4 KiB randread job of `iodepth` against a server that holds
/// every connection and answers nothing, except (with `head_answered`)
/// the layout's `HEAD` on the first: the job must fail once the client's
/// timeout passes, not wait for ever. Returns what it printed.
fn job_against_a_silent_server(name: &str, iodepth: u32, head_answered: bool) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().take(iodepth as usize + 1).enumerate() {
            let mut stream = stream.unwrap();
            if n == 0 && head_answered {
                let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                while r.read_line(&mut head).unwrap() > 0 && !head.ends_with("\r\n\r\n") {}
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n").unwrap();
            }
            held.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(held);
    });
    let started = std::time::Instant::now();
    let o = shardbench(&[
        format!("--name={name}"),
        "--target=agent".to_owned(),
        format!("--url=http://{addr}"),
        "--rw=randread".to_owned(),
        "--bs=4k".to_owned(),
        "--size=64k".to_owned(),
        format!("--iodepth={iodepth}"),
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(90), "{:?}", started.elapsed());
    text
}

/// An agent that takes connections and never answers (a stopped or hung
/// process) fails the job, naming the request, once the timeout passes;
/// the job does not wait for it for ever.
#[test]
fn an_agent_that_stops_answering_fails_the_job_instead_of_hanging_it() {
    let text = job_against_a_silent_server("silent", 1, false);
    assert!(text.contains("HEAD /v1/shards/silent") && text.contains("did not answer within 30s"), "{text}");
}

/// The same once the job runs: its client thread, with `iodepth` requests
/// out, fails naming one of them.
#[test]
fn requests_in_flight_that_are_never_answered_fail_the_job() {
    let text = job_against_a_silent_server("mute", 2, true);
    assert!(text.contains("GET /v1/shards/mute%2F") && text.contains("did not answer within 30s"), "{text}");
}

/// The agent target against a real agent: gets of 4 KiB among puts of
/// 1 MiB (bodies larger than a socket takes at once), `iodepth`
/// connections of one client thread; every request answered as asked.
#[test]
fn the_agent_target_drives_a_real_agent_over_iodepth_connections() {
    use std::io::{BufRead, Read, Write};
    /// Kills the agent however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_shardbench")).parent().unwrap().join("shard-agent");
    assert!(bin.exists(), "build the workspace first (cargo test --workspace does)");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "default_device_count = 1\ndefault_device_size_bytes = 268435456\n").unwrap();
    let mut agent = Command::new(&bin)
        .args(["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let agent = Stop(agent);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("the agent's log ended before it was ready").unwrap();
        if line.contains("shard-agent ready") {
            break line.split_whitespace().find_map(|w| w.strip_prefix("listen=")).unwrap().to_owned();
        }
    };
    // The log keeps flowing, or the agent would block on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let o = shardbench(&[
        "--name=mix".to_owned(),
        "--target=agent".to_owned(),
        format!("--url=http://{addr}"),
        "--rw=randrw".to_owned(),
        "--rwmixread=80".to_owned(),
        "--bs=4k,1m".to_owned(),
        "--size=16m".to_owned(),
        "--iodepth=6".to_owned(),
        "--runtime=1".to_owned(),
        "--time_based".to_owned(),
        "--output-format=json".to_owned(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    let (read, write) = (&v["jobs"][0]["read"], &v["jobs"][0]["write"]);
    let (gets, puts) = (read["total_ios"].as_u64().unwrap(), write["total_ios"].as_u64().unwrap());
    assert!(gets > 0 && puts > 0, "{v}");
    assert_eq!(read["io_bytes"].as_u64().unwrap(), gets * 4096, "every get read a whole 4 KiB shard");
    assert_eq!(write["io_bytes"].as_u64().unwrap(), puts << 20);
    // One connection laid the shards out, the job's thread kept 6, and
    // this is the eighth.
    let mut m = std::net::TcpStream::connect(&addr).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    m.read_to_string(&mut text).unwrap();
    let accepted = text.lines().find_map(|l| l.strip_prefix("shardnode_http_connections_total ")).unwrap();
    assert_eq!(accepted.trim(), "8", "{text}");
    drop(agent);
}
