use super::*;

fn parse(line: &str) -> Result<Invocation, String> {
    parse_args(line.split_whitespace().map(str::to_owned))
}

#[test]
fn fio_command_lines_parse() {
    let inv = parse("--ioengine=io_uring --direct=1 --name=rr --filename=/tmp/x --rw=randread --bs=4k --iodepth 32 --runtime=10 --time_based --output-format=json").unwrap();
    assert_eq!(inv.output_format, OutputFormat::Json);
    let j = &inv.jobs[0];
    assert_eq!((j.rw, j.bs, j.iodepth, j.runtime_us, j.time_based), (Rw::RandRead, 4096, 32, Some(10_000_000), true));
    assert_eq!(j.filename.as_deref(), Some(std::path::Path::new("/tmp/x")));
}

#[test]
fn globals_apply_to_every_job_and_job_options_to_one() {
    let inv = parse("--filename=/d --bs=8k --name=a --rw=write --name=b --bs=1m").unwrap();
    assert_eq!(inv.jobs.len(), 2);
    assert_eq!((inv.jobs[0].bs, inv.jobs[0].rw), (8192, Rw::Write));
    assert_eq!((inv.jobs[1].bs, inv.jobs[1].rw), (1 << 20, Rw::Read));
}

#[test]
fn an_agent_job_needs_a_url_not_a_file() {
    let inv = parse("--name=a --target=agent --url=http://127.0.0.1:7480/ --rw=write --bs=1m").unwrap();
    assert_eq!((inv.jobs[0].target, inv.jobs[0].url.as_deref()), (Target::Agent, Some("127.0.0.1:7480")));
    let inv = parse("--name=o --target=objects --url=http://127.0.0.1:7480 --rw=read --bs=16m").unwrap();
    assert_eq!(inv.jobs[0].target, Target::Objects, "objects larger than a shard are fine");
    assert!(parse("--name=o --target=objects --rw=read").unwrap_err().contains("--target=objects needs --url"));
}

#[test]
fn mixes_follow_fio() {
    let inv = parse("--name=m --filename=/d --rw=randrw --rwmixwrite=30").unwrap();
    assert_eq!(inv.jobs[0].rw.read_percent(inv.jobs[0].rwmixread), 70);
}

#[test]
fn job_files_follow_fio() {
    let text = "; a comment\n[global]\nfilename=/d\nbs=8k\ntime_based\nruntime=5\n\n[reads]\nrw=randread\niodepth=16\n\
                # another\n[writes]\nrw=write\nbs=1m\n";
    let defaults = JobSpec { ioengine: Engine::Psync, ..JobSpec::default() };
    let jobs = parse_job_file("job.fio", text, &defaults).unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!((jobs[0].name.as_str(), jobs[0].rw, jobs[0].bs, jobs[0].iodepth), ("reads", Rw::RandRead, 8192, 16));
    assert_eq!((jobs[1].name.as_str(), jobs[1].rw, jobs[1].bs), ("writes", Rw::Write, 1 << 20));
    for j in &jobs {
        assert!(
            j.time_based
                && j.runtime_us == Some(5_000_000)
                && j.filename.as_deref() == Some(std::path::Path::new("/d"))
        );
        assert_eq!(j.ioengine, Engine::Psync, "options given before the file are its defaults");
    }
    let errors = [
        ("[a]\nverify_pattern=1\n", "job.fio:2: unknown option \"verify_pattern\""),
        ("bs=4k\n[a]\n", "job.fio:1: option \"bs\" before any [section]"),
        ("[a]\nbs=4q\n", "job.fio:2: option bs"),
        ("[a\n", "job.fio:1: unterminated section"),
        ("[global]\nbs=4k\n", "no job sections"),
        ("[a]\nrw\n", "job.fio:2: option \"rw\" needs a value"),
    ];
    for (text, want) in errors {
        let err = parse_job_file("job.fio", text, &JobSpec::default()).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err:?} should mention {want:?}");
    }
}

#[test]
fn percentile_lists_follow_fio() {
    let inv = parse("--name=a --filename=/d --percentile_list=50:99:99.99").unwrap();
    assert_eq!(inv.jobs[0].percentile_list, vec![50.0, 99.0, 99.99]);
    let inv = parse("--name=a --filename=/d").unwrap();
    assert_eq!(inv.jobs[0].percentile_list.len(), 17, "fio's default list");
}

#[test]
fn submission_batches_follow_fio() {
    let inv = parse("--name=a --filename=/d --iodepth=32").unwrap();
    assert_eq!(inv.jobs[0].iodepth_batch_submit, 1, "fio submits each I/O at once by default");
    let inv = parse("--name=a --filename=/d --iodepth=32 --iodepth_batch=8").unwrap();
    assert_eq!(inv.jobs[0].iodepth_batch_submit, 8);
    let inv = parse("--name=a --filename=/d --iodepth_batch_submit=0").unwrap();
    assert_eq!(inv.jobs[0].iodepth_batch_submit, 0);
    let err = parse("--name=a --filename=/d --iodepth_batch_submit=-1").unwrap_err();
    assert!(err.contains("option iodepth_batch_submit"), "{err}");
}

#[test]
fn block_size_choices_follow_fio() {
    let j = &parse("--name=a --filename=/d --bsrange=4k-64k").unwrap().jobs[0];
    assert_eq!((j.sizes.clone(), j.bs), (BlockSizes::Range { min: 4096, max: 65536 }, 65536));
    let j = &parse("--name=a --filename=/d --bssplit=4k/10:64k/50:32k/40").unwrap().jobs[0];
    assert_eq!(j.sizes, BlockSizes::Split(vec![(4096, 10), (65536, 50), (32768, 40)]));
    // Sizes without a share split what is left (fio), 1% to the first.
    let j = &parse("--name=a --filename=/d --bssplit=4k/:8k/:16k/50").unwrap().jobs[0];
    assert_eq!(j.sizes, BlockSizes::Split(vec![(4096, 25), (8192, 25), (16384, 50)]));
    let j = &parse("--name=a --filename=/d --bssplit=4k/:8k/:16k/:1m/1").unwrap().jobs[0];
    assert_eq!(j.sizes, BlockSizes::Split(vec![(4096, 33), (8192, 33), (16384, 33), (1 << 20, 1)]));
    // The draws follow the shares.
    let mut rng = shardstore::rng::Rng::new(7);
    let split = BlockSizes::Split(vec![(4096, 10), (65536, 90)]);
    let small = (0..10_000).filter(|_| split.pick(&mut rng) == 4096).count();
    assert!((800..1200).contains(&small), "{small} of 10000 at 10%");
    let range = BlockSizes::Range { min: 4096, max: 16384 };
    let picks: std::collections::BTreeSet<u64> = (0..1000).map(|_| range.pick(&mut rng)).collect();
    assert_eq!(picks.into_iter().collect::<Vec<_>>(), [4096, 8192, 12288, 16384]);
    // A later bs replaces a range.
    let j = &parse("--name=a --filename=/d --bsrange=4k-8k --bs=16k").unwrap().jobs[0];
    assert_eq!(j.sizes, BlockSizes::Fixed(16384));
}

#[test]
fn rates_syncs_and_groups_follow_fio() {
    let j = &parse("--name=a --filename=/d --rate=1m --rate_iops=,500").unwrap().jobs[0];
    assert_eq!((j.rate, j.rate_iops), ([1 << 20, 1 << 20], [0, 500]));
    let j = &parse("--name=a --filename=/d --rate=2m,").unwrap().jobs[0];
    assert_eq!(j.rate, [2 << 20, 0]);
    let j = &parse("--name=a --filename=/d --fdatasync=8 --end_fsync --norandommap --randrepeat=0").unwrap().jobs[0];
    assert_eq!((j.fdatasync, j.fsync, j.end_fsync, j.randommap, j.randrepeat), (8, 0, true, false, false));
    let inv = parse("--filename=/d --name=a --name=b --name=c --stonewall --name=d --output-format=json+").unwrap();
    let sizes: Vec<usize> = super::super::groups(&inv.jobs).iter().map(|g| g.len()).collect();
    assert_eq!(sizes, [2, 2], "stonewall starts a new group");
    assert_eq!((inv.output_format, inv.eta), (OutputFormat::JsonPlus, Eta::Auto));
    let inv = parse("--name=a --filename=/d --target=store --crash-test=sim --rw=write --crash_rounds=3").unwrap();
    assert_eq!((inv.jobs[0].crash_test, inv.jobs[0].crash_rounds), (Some(CrashTest::Sim), 3));
    let inv = parse("--name=a --filename=/d --target=store --crash-test --rw=randwrite --eta=never").unwrap();
    assert_eq!((inv.jobs[0].crash_test, inv.eta), (Some(CrashTest::Kill), Eta::Never));
}

#[test]
fn every_error_names_what_is_wrong() {
    let cases = [
        ("--name=a --filename=/d --verify_fatal=1", "unknown option --verify_fatal"),
        ("--name=a --filename=/d --verify=md5", "option verify: unsupported method"),
        ("--name=a --filename=/d --rw=trim", "unsupported pattern"),
        ("--name=a --filename=/d --bs=1000", "option bs"),
        ("--name=a --filename=/d --bs=4q", "unknown suffix"),
        ("--name=a --filename=/d --iodepth=0", "option iodepth"),
        ("--name=a --filename=/d --rwmixread=101", "option rwmixread"),
        ("--name=a --filename=/d --direct=0", "direct=0"),
        ("--name=a --filename=/d --ioengine=libaio", "unsupported engine"),
        ("--name=a --filename=/d --output-format=terse", "unsupported format"),
        ("--name=a --filename=/d --time_based", "needs --runtime"),
        ("--name=a --filename=/d --runtime=5x", "option runtime"),
        ("--name=a", "no --filename"),
        ("--filename=/d", "no job defined"),
        ("--name=a --filename=/d --iodepth", "needs a value"),
        ("--name=a --filename=/d /nonexistent/job.fio", "job file /nonexistent/job.fio"),
        ("--name=a --filename=/d --bs=8k --offset=4k", "not a multiple of bs"),
        ("--name=a --target=agent", "needs --url"),
        ("--name=a --target=agent --url=https://h:1", "not an http:// URL"),
        ("--name=a --target=agent --url=http://h:1/v1", "expected http://HOST:PORT"),
        ("--name=a --filename=/d --target=cloud", "unsupported target"),
        ("--name=a --filename=/d --scrub=max", "for --target=store"),
        ("--name=a --filename=/d --percentile_list=50:x", "option percentile_list"),
        ("--name=a --filename=/d --percentile_list=101", "option percentile_list"),
        ("--name=a --filename=/d --target=store --scrub=fast", "option scrub"),
        ("--name=a --filename=/d --target=store --scrub_only", "needs --scrub"),
        ("--name=a --filename=/d --bsrange=64k-4k", "option bsrange: MIN 65536 is above MAX 4096"),
        ("--name=a --filename=/d --bsrange=4k", "option bsrange: expected MIN-MAX"),
        ("--name=a --filename=/d --bsrange=4k-8k,16k-32k", "separate read/write settings"),
        ("--name=a --filename=/d --bssplit=4k/50:8k/40", "add up to 90%, not 100%"),
        ("--name=a --filename=/d --bssplit=4k/80:8k/40", "add up to 120%"),
        ("--name=a --filename=/d --bssplit=4k/x", "option bssplit"),
        ("--name=a --filename=/d --bssplit=1000/100", "option bssplit: 1000 must be"),
        ("--name=a --filename=/d --rate=fast", "option rate"),
        ("--name=a --filename=/d --rate_iops=1k", "option rate_iops"),
        ("--name=a --filename=/d --fsync=-1", "option fsync"),
        ("--name=a --filename=/d --target=store --rate=1m", "rate/rate_iops is for --target=device"),
        ("--name=a --filename=/d --target=store --fdatasync=1", "every put is durable"),
        ("--name=a --filename=/d --target=store --bsrange=4k-8k", "bsrange/bssplit is for --target=device"),
        ("--name=a --filename=/d --bs=4k,1m", "bs=R,W) are for --target=store or agent"),
        ("--name=a --filename=/d --target=store --bs=4k,x", "option bs (writes)"),
        ("--name=a --filename=/d --crash-test", "--crash-test is for --target=store"),
        ("--name=a --filename=/d --target=store --crash-test", "--crash-test writes"),
        ("--name=a --filename=/d --target=store --crash-test=pull", "option crash-test: unsupported mode"),
        ("--name=a --filename=/d --eta=sometimes", "option eta"),
        ("--name=a --filename=/d --output-format=json++", "unsupported format"),
    ];
    for (line, want) in cases {
        let err = parse(line).unwrap_err();
        assert!(err.contains(want), "{line}: {err:?} should mention {want:?}");
    }
}
