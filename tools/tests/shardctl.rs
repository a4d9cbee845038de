//! `shardctl format` and `inspect` as an operator runs them: real binaries
//! on real files and, as root, on a real loop device.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn shardctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl")).args(args).output().expect("run shardctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn inspect_json(path: &str) -> (i32, Value) {
    let o = shardctl(&["inspect", path, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("inspect JSON: {e}: {}", stderr(&o)));
    (o.status.code().unwrap(), v)
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn format_then_inspect_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let p = img.to_str().unwrap();
    let o = shardctl(&["format", p, "--size", "256M", "--extent-size", "8M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("formatted"));
    let (code, v) = inspect_json(p);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "healthy");
    let copies = v["superblock"]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 4);
    for c in copies {
        assert_eq!(c["valid"], true);
        assert_eq!(c["sequence"], 1);
        assert!(c["problem"].is_null());
        assert!(c["offset"].as_u64().unwrap() % 4096 == 0);
    }
    assert_eq!(v["superblock"]["in_force"]["layout"]["extent_size_bytes"], 8 << 20);
    let human = shardctl(&["inspect", p]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("in force    sequence 1") && text.contains("status      healthy"), "{text}");

    // A second format is refused, naming what is there; --force works.
    let o = shardctl(&["format", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds a shardnode store") && stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = shardctl(&["format", p, "--force", "--extent-size", "16M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inspect_json(p).1["superblock"]["in_force"]["layout"]["extent_size_bytes"], 16 << 20);
}

/// A new user's first device: a 256 MiB file, no --extent-size. It used to
/// be refused (four 64 MiB extents plus metadata do not fit); the default
/// extent size now shrinks until 16 extents fit.
#[test]
fn a_small_file_formats_without_an_extent_size() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.img");
    let p = img.to_str().unwrap();
    let o = shardctl(&["format", p, "--size", "256M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let layout = &inspect_json(p).1["superblock"]["in_force"]["layout"];
    assert_eq!(layout["extent_size_bytes"], 8 << 20);
    assert_eq!(layout["extent_count"], 30);
    // An explicit size is still validated, and named when refused.
    let o = shardctl(&["format", p, "--force", "--extent-size", "128M"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
}

/// `--lay-out` writes the whole new file, as fio lays out its files (the
/// benchmarks' devices): every block is allocated, none is a hole; the
/// store is formatted on it as on a sparse one. An existing file is not
/// laid out (nor overwritten).
#[test]
fn a_laid_out_file_has_every_block_written() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("full.img");
    let p = img.to_str().unwrap();
    let o = shardctl(&["format", p, "--size", "64M", "--extent-size", "4M", "--lay-out"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(meta.blocks() * 512 >= 64 << 20, "{} bytes allocated: holes left", meta.blocks() * 512);
    assert_eq!(inspect_json(p).1["status"], "healthy");
    let o = shardctl(&["format", p, "--size", "64M", "--lay-out", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--lay-out writes only a file --size creates"), "{}", stderr(&o));
    assert_eq!(inspect_json(p).1["status"], "healthy", "the refused command wrote nothing");
    // Without --lay-out the file is sparse: what the option changes.
    let sparse = dir.path().join("sparse.img");
    assert!(shardctl(&["format", sparse.to_str().unwrap(), "--size", "64M", "--extent-size", "4M"]).status.success());
    assert!(std::fs::metadata(&sparse).unwrap().blocks() * 512 < 32 << 20);
}

#[test]
fn inspect_reports_damaged_copies_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let p = img.to_str().unwrap();
    assert!(shardctl(&["format", p, "--size", "64M", "--extent-size", "4M"]).status.success());
    let offsets: Vec<u64> = inspect_json(p).1["superblock"]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offset"].as_u64().unwrap())
        .collect();

    // One torn copy: degraded, exit 3, the copy named with its problem.
    write_at(&img, offsets[2] + 1000, &[0xFF; 100]);
    let (code, v) = inspect_json(p);
    assert_eq!(code, 3);
    assert_eq!(v["status"], "degraded");
    let c2 = &v["superblock"]["copies"][2];
    assert_eq!(c2["valid"], false);
    assert!(c2["problem"].as_str().unwrap().contains("bad checksum"), "{c2}");
    let o = shardctl(&["inspect", p]);
    assert!(stderr(&o).contains("copies 2 need repair"), "{}", stderr(&o));

    // A misdirected copy: copy 1's bytes in slot 0.
    let mut copy1 = vec![0u8; 4096];
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&img).unwrap().read_exact_at(&mut copy1, offsets[1]).unwrap();
    }
    write_at(&img, offsets[0], &copy1);
    let (code, v) = inspect_json(p);
    // Copies 1 and 3 are still valid: a quorum of 2, so it still opens.
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["superblock"]["in_force"]["sequence"], 1);
    let c0 = &v["superblock"]["copies"][0];
    assert!(c0["problem"].as_str().unwrap().contains("misdirected"), "{c0}");

    // Three bad copies: unusable, exit 1.
    write_at(&img, offsets[3] + 8, &[0xEE; 4]);
    let (code, v) = inspect_json(p);
    assert_eq!(code, 1);
    assert_eq!(v["status"], "unusable");
    assert!(v["reason"].as_str().unwrap().contains("no superblock version"), "{v}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["format".into(), missing.display().to_string()], "pass --size"),
        (vec!["inspect".into(), missing.display().to_string()], "No such file"),
        (
            vec!["format".into(), dir.path().join("s.img").display().to_string(), "--size".into(), "8M".into()],
            "too small",
        ),
        (
            vec![
                "format".into(),
                dir.path().join("e.img").display().to_string(),
                "--size".into(),
                "1G".into(),
                "--extent-size".into(),
                "3M".into(),
            ],
            "not a power of two",
        ),
        (
            vec![
                "format".into(),
                dir.path().join("b.img").display().to_string(),
                "--size".into(),
                "1G".into(),
                "--extent-size".into(),
                "2k".into(),
            ],
            "not a multiple of the block size",
        ),
        (vec!["format".into(), dir.path().display().to_string()], "not a block device or a regular file"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = shardctl(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} should contain {want:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line expected: {err:?}");
    }
    // A refused format leaves no file behind.
    assert!(!dir.path().join("s.img").exists());
    assert!(!dir.path().join("e.img").exists());
    // Unknown data is not overwritten.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![7u8; 64 << 20]).unwrap();
    let o = shardctl(&["format", junk.to_str().unwrap()]);
    assert!(stderr(&o).contains("unknown kind"), "{}", stderr(&o));
    assert!(std::fs::read(&junk).unwrap().iter().all(|&b| b == 7), "refused format must not write");
}

/// Detaches the loop device however the test ends.
struct Loop {
    dev: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn format_and_inspect_a_real_loop_device() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("format_and_inspect_a_real_loop_device: needs root to attach a loop device");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let backing = dir.path().join("loop.img");
    std::fs::File::create(&backing).unwrap().set_len(512 << 20).unwrap();
    let out = Command::new("losetup").args(["--find", "--show"]).arg(&backing).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        other => panic!("losetup is required as root and failed: {other:?}"),
    };
    let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let guard = Loop { dev: dev.clone() };
    let p = dev.to_str().unwrap();

    let o = shardctl(&["format", p, "--extent-size", "16M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, v) = inspect_json(p);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["device"]["kind"], "block_device");
    assert_eq!(v["device"]["size_bytes"], 512u64 << 20);
    assert_eq!(v["device"]["logical_block_size"], 512);
    assert!(v["superblock"]["copies"].as_array().unwrap().iter().all(|c| c["valid"] == true));

    let o = shardctl(&["format", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = shardctl(&["format", p, "--size", "1G"]);
    assert!(stderr(&o).contains("only to regular files"), "{}", stderr(&o));

    // Held exclusively (as a mount would): refused as busy, even with --force.
    let held = std::fs::OpenOptions::new().read(true).custom_flags(libc_o_excl()).open(&dev).unwrap();
    let o = shardctl(&["format", p, "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("mounted or held open"), "{}", stderr(&o));
    drop(held);
    let o = shardctl(&["format", p, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(guard);
}

fn libc_o_excl() -> i32 {
    nix::fcntl::OFlag::O_EXCL.bits()
}

/// Formats `img` with shardctl and fills its store through the library,
/// closing it cleanly.
fn formatted_store(img: &Path, fill: impl FnOnce(&mut shardstore::store::Store)) {
    let p = img.to_str().unwrap();
    assert!(shardctl(&["format", p, "--size", "256M", "--extent-size", "8M"]).status.success());
    let dev = shardstore::device::open(img, &shardstore::device::OpenOptions::default()).unwrap();
    let mut store = shardstore::store::Store::open(Box::new(dev)).unwrap();
    fill(&mut store);
    store.close().unwrap();
}

#[test]
fn inspect_shows_the_store_and_verifies_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let p = img.to_str().unwrap();
    formatted_store(&img, |store| {
        store.put(b"photos/cat", &vec![7u8; 300_000]).unwrap();
        store.put(b"photos/dog", b"woof").unwrap();
    });
    let (code, v) = inspect_json(p);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["store"]["shards"], 2);
    assert_eq!(v["store"]["shard_bytes"], 300_004);
    assert_eq!(v["store"]["opened_clean"], true);
    let extents = v["store"]["extents"].as_array().unwrap();
    assert!(extents.iter().any(|e| e["live_bytes"].as_u64().unwrap() > 300_000));
    let text = String::from_utf8(shardctl(&["inspect", p]).stdout).unwrap();
    assert!(text.contains("store       2 shards") && text.contains("  live      "), "{text}");

    let o = shardctl(&["inspect", p, "--shard", "photos/cat", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shard"]["verified"], true);
    assert_eq!(v["shard"]["size"], 300_000);
    let offset = v["shard"]["chunk_offsets"][0].as_u64().unwrap();

    // One flipped byte in the shard's data: found, named, non-zero exit.
    write_at(&img, offset + 1000, &[0x55]);
    let o = shardctl(&["inspect", p, "--shard", "photos/cat", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shard"]["verified"], false);
    assert!(v["shard"]["problem"].as_str().unwrap().contains("corrupt"), "{v}");
    assert_eq!(v["status"], "shard_not_verified");
    // Inspect wrote nothing: the other shard is still fine and the
    // superblock still says clean.
    let o = shardctl(&["inspect", p, "--shard", "photos/dog", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let o = shardctl(&["inspect", p, "--shard", "photos/none"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert_eq!(inspect_json(p).1["superblock"]["in_force"]["clean_shutdown"], true);
}

#[test]
fn fsck_finds_dead_space_corruption_and_dangling_references() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let p = img.to_str().unwrap();
    formatted_store(&img, |store| {
        for i in 0..20u32 {
            store.put(format!("k/{i}").as_bytes(), &vec![i as u8; 5000 + i as usize * 300]).unwrap();
        }
        store.put(b"big", &vec![3u8; (1 << 20) + 10]).unwrap();
        store.put(b"empty", b"").unwrap();
        store.delete(b"k/3").unwrap();
        store.put(b"k/4", b"overwritten").unwrap();
    });
    let o = shardctl(&["fsck", p, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shards_checked"], 21);
    // 19 k/* shards (k/3 deleted; k/4 rewritten, still one record), big in
    // 2 chunks, and the empty shard.
    assert_eq!(v["records_live"], 22, "{v}");
    assert_eq!(v["records_dead"], 2, "the deleted and the overwritten record: {v}");
    assert!(v["problems"].as_array().unwrap().is_empty());

    // A flipped byte in a live payload is a problem naming the shard.
    let offset = {
        let o = shardctl(&["inspect", p, "--shard", "k/7", "--json"]);
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["shard"]["chunk_offsets"][0].as_u64().unwrap()
    };
    write_at(&img, offset + 17, &[0xEE]);
    let o = shardctl(&["fsck", p]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("shard \"k/7\" chunk 0: payload corrupt") && out.contains("INCONSISTENT"), "{out}");

    // A header partly overwritten is damage; a header block wiped blank
    // leaves the index pointing at nothing.
    let problems = |img_change: &[u8]| -> Vec<String> {
        write_at(&img, offset - 4096, img_change);
        let o = shardctl(&["fsck", p, "--json"]);
        assert_eq!(o.status.code(), Some(1));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
    };
    let damaged = problems(&[0u8; 64]);
    assert!(damaged.iter().any(|p| p.contains("k/7") && p.contains("header") && p.contains("damaged")), "{damaged:?}");
    let blank = problems(&[0u8; 4096]);
    assert!(
        blank.iter().any(|p| p.contains("k/7") && p.contains("blank") && p.contains("points at nothing")),
        "{blank:?}"
    );
}

#[test]
fn scrub_verifies_a_real_image_and_names_every_damaged_place() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let p = img.to_str().unwrap();
    formatted_store(&img, |store| {
        for i in 0..12u32 {
            store.put(format!("s/{i}").as_bytes(), &vec![i as u8; 9000 + i as usize * 1000]).unwrap();
        }
        store.put(b"big", &vec![9u8; (2 << 20) + 3]).unwrap();
    });
    let o = shardctl(&["scrub", p, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chunks_verified"], 12 + 3, "{v}");
    assert_eq!(v["superblock_copies_checked"], 4);
    assert!(v["findings"].as_array().unwrap().is_empty());

    // A flipped byte in one shard's data and a damaged superblock copy.
    let offset = {
        let o = shardctl(&["inspect", p, "--shard", "s/5", "--json"]);
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["shard"]["chunk_offsets"][0].as_u64().unwrap()
    };
    write_at(&img, offset + 4321, &[0xA5]);
    write_at(&img, 512 * 1024 + 100, &[0xFF; 8]); // superblock copy 1
    let o = shardctl(&["scrub", p, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut found: Vec<(String, String, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["key"].as_str().unwrap_or("").to_owned(),
                f["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("chunk_checksum".to_owned(), "s/5".to_owned(), offset),
            ("superblock_copy".to_owned(), String::new(), 512 * 1024)
        ],
        "{v}"
    );
    let text = String::from_utf8(shardctl(&["scrub", p]).stdout).unwrap();
    assert!(text.contains("ChunkChecksum shard \"s/5\"") && text.contains("DAMAGED"), "{text}");
}

/// Completions and man pages come from the command definitions: bash
/// loads the completion script and completes subcommands with it; zsh and
/// fish scripts name every subcommand; `man` writes a page for shardctl
/// and for every subcommand, each a roff page naming itself.
#[test]
fn completions_load_in_bash_and_man_pages_cover_every_subcommand() {
    let subcommands = ["format", "inspect", "fsck", "scrub", "status", "cluster", "object", "repairs"];
    let o = shardctl(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("shardctl.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    // Complete "shardctl st" as bash would on TAB.
    let probe = format!(
        "source {}; COMP_WORDS=(shardctl st); COMP_CWORD=1; COMP_LINE='shardctl st'; COMP_POINT=11; \
         _shardctl shardctl st shardctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let b = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let offered = String::from_utf8_lossy(&b.stdout);
    assert!(b.status.success() && offered.lines().any(|l| l == "status"), "bash completion: {offered}{}", stderr(&b));
    for shell in ["zsh", "fish"] {
        let o = shardctl(&["completions", shell]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && subcommands.iter().all(|s| text.contains(s)), "{shell} completion:\n{text}");
    }
    let o = shardctl(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");

    let man = dir.path().join("man1");
    let o = shardctl(&["man", "--dir", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for page in std::iter::once("shardctl".to_owned()).chain(subcommands.iter().map(|s| format!("shardctl-{s}"))) {
        let text = std::fs::read_to_string(man.join(format!("{page}.1"))).unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.contains(".TH") && text.contains(&page), "{page}.1 is not its man page:\n{text}");
    }
    assert!(man.join("shardctl-cluster-local.1").exists() && man.join("shardctl-object-put.1").exists());
}

/// Exit codes as docs/cli.md lists them: 0 ok, 1 failure, 2 usage.
#[test]
fn exit_codes_follow_the_contract() {
    assert_eq!(shardctl(&["--version"]).status.code(), Some(0));
    assert_eq!(shardctl(&["format"]).status.code(), Some(2), "a missing argument");
    assert_eq!(shardctl(&["status", "--agent", "http://127.0.0.1:9", "--bogus"]).status.code(), Some(2));
    let o = shardctl(&["status", "--agent", "http://127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(1), "nothing listens on port 9: {}", stderr(&o));
    assert!(stderr(&o).starts_with("shardctl: ") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    let about = String::from_utf8_lossy(&shardctl(&["--help"]).stdout).into_owned();
    assert!(about.starts_with("shardctl, the shardnode admin CLI") && about.contains("Exit codes"), "{about}");
}

/// A missing prerequisite: a failure under CI (`CI` set, as `.ci/run`
/// sets it: there every prerequisite must be present), else a skip said
/// on stderr.
fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "prerequisite missing under CI: {why}");
    eprintln!("SKIPPED: {why}");
}

/// The install script, staged under a temporary root as a package build
/// would run it: binaries, the unit (naming the installed agent), the
/// example configuration, the Prometheus rules, man pages and completion
/// land where the README says; a second run keeps an edited configuration.
#[test]
fn the_install_script_stages_everything_and_keeps_an_edited_config() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_shardctl")).parent().unwrap().to_path_buf();
    assert!(bin_dir.join("shard-agent").exists(), "build the workspace first (cargo test --workspace does)");
    let stage = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install");
    let run = || {
        Command::new(script)
            .args(["--destdir", stage.path().to_str().unwrap(), "--prefix", "/opt/shardnode", "--bin-dir"])
            .arg(&bin_dir)
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let at = |p: &str| stage.path().join(p.trim_start_matches('/'));
    for file in [
        "/opt/shardnode/bin/shard-agent",
        "/opt/shardnode/bin/shardctl",
        "/opt/shardnode/bin/shardbench",
        "/etc/shardnode/agent.toml",
        "/opt/shardnode/share/shardnode/agent.toml.example",
        "/opt/shardnode/share/shardnode/prometheus/shardnode.rules.yml",
        "/opt/shardnode/share/man/man1/shardctl.1",
        "/opt/shardnode/share/man/man1/shardctl-format.1",
        "/etc/bash_completion.d/shardctl",
    ] {
        assert!(at(file).is_file(), "{file} was not installed");
    }
    let unit = std::fs::read_to_string(at("/etc/systemd/system/shard-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/shardnode/bin/shard-agent --config /etc/shardnode/agent.toml"), "{unit}");
    let o = Command::new(at("/opt/shardnode/bin/shardctl")).arg("--version").output().unwrap();
    assert!(o.status.success(), "the installed shardctl runs");
    std::fs::write(at("/etc/shardnode/agent.toml"), "# edited by the operator\n").unwrap();
    let o = run();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("keeping the existing"));
    assert_eq!(std::fs::read_to_string(at("/etc/shardnode/agent.toml")).unwrap(), "# edited by the operator\n");
}
