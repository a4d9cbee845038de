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
            eprintln!("SKIP fio comparison: fio is not installed and could not be installed ({other:?})");
            false
        }
    }
}

/// Every field of `ours` exists in `fio` with the same JSON type.
fn assert_subset(ours: &Value, fio: &Value, path: &str) {
    match (ours, fio) {
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
    let common = "--rw=randrw --bs=4k --iodepth=4 --runtime=1 --time_based --output-format=json";
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
    }
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
        eprintln!("SKIP registered_buffers_fall_back_when_memlock_is_refused: needs root to run as nobody");
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
