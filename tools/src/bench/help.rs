//! `shardbench --help`: every option described, grouped as fio's own
//! option documentation groups them. A test keeps it covering every option
//! the parser knows.

pub const HELP: &str = "\
shardbench: a fio-style benchmark of the shardnode device engine, shard store and agent.
Options and output (normal and JSON) are fio's for what it supports, so
every figure is comparable with fio's on the same device. Full reference:
docs/cli.md (\"shardbench\").

usage: shardbench [--output-format=F] [--eta=E] --name=JOB --filename=PATH [OPTION=VALUE...] [--name=JOB2 ...]
       shardbench [OPTION=VALUE...] JOBFILE...     (fio job files: [global], [job], key=value)

Job description
  --name=NAME               start a job (every option after it belongs to it)
  --stonewall               wait for the jobs before this one; starts a new reporting group
  --wait_for_previous       the same as --stonewall
  --numjobs=N               run N copies of the job
  --group_reporting         report a group's jobs as one

Target
  --target=device|store|agent|objects
                            device: the raw engine on FILENAME (default); store: the shard
                            store on FILENAME (a store thread, as the agent runs it);
                            agent: a running agent's shard API over HTTP (--url);
                            objects: a cluster's object API through one agent (--url)
  --filename=PATH           file or block device (created and laid out with --size if missing)
  --url=http://HOST:PORT    the agent, for --target=agent|objects

I/O type
  --rw=read|write|randread|randwrite|rw|randrw   (alias --readwrite) the pattern
  --rwmixread=PCT           share of reads in rw/randrw (default 50); --rwmixwrite=PCT the rest

Block size
  --bs=SIZE[,WRITE]         I/O size (alias --blocksize; default 4k); store target: READ,WRITE
                            gets READ-byte shards while puts write WRITE-byte ones
  --bsrange=MIN-MAX         (alias --blocksize_range) device target: sizes uniform in
                            MIN..MAX, multiples of MIN
  --bssplit=BS/PCT:...      device target: each size takes its share of the I/Os

Buffers, memory and engine
  --ioengine=io_uring|psync device target (default io_uring)
  --direct=1                O_DIRECT, always (0 is refused)
  --fixedbufs=0|1           register the buffers with the ring (default 1, falls back when refused)
  --registerfiles=0|1       register the file with the ring (default 1)

I/O size
  --size=SIZE               the region (or the store's data) the job covers
  --offset=SIZE             where the region starts (device target)

I/O depth
  --iodepth=N               operations in flight (agent: connections per job thread)
  --iodepth_batch_submit=N  (alias --iodepth_batch) I/Os handed to the kernel together; 0: iodepth

Time
  --runtime=TIME            how long to run (s, or with a unit: 500ms, 2m)
  --time_based              run for --runtime even after covering --size
  --ramp_time=TIME          run this long before measuring

Rate
  --rate=[R][,W]            bandwidth cap per direction (device target)
  --rate_iops=[R][,W]       IOPS cap per direction (device target)

Random
  --randseed=N              seed of offsets and data
  --randrepeat=0|1          the same offsets every run (default 1)
  --norandommap             random offsets may repeat within a pass

Durability (device target; every store put is durable already)
  --fsync=N                 fsync after every N writes
  --fdatasync=N             fdatasync after every N writes
  --end_fsync               fsync when the job ends

Verification
  --verify=crc32c           device target: write a checksum into each block, check it on read
  --do_verify=0|1           run the verify phase after the writes (default 1)

Store target
  --scrub=off|deadline|max|RATE   the background scrubber during the job (default off)
  --scrub_only              no requests: report the scrubber's own reads
  --crash-test[=kill|sim]   kill (or simulate a crash of) the store while it writes, then check
                            every acknowledged put (kill: SIGKILL a child; sim: the simulated device)
  --crash_rounds=N          crash rounds

Measurements and reporting
  --lat_percentiles=0|1     report total-latency percentiles (fio's lat_percentiles)
  --percentile_list=P:P:... which percentiles (default fio's)
  --output-format=normal|json|json+   the report (command line only)
  --eta=auto|always|never   the progress line (command line only)

Other
  --help, -h                this text
  --version                 shardbench's version

Exit codes: 0 ok, 1 a run or a check failed (a crash test that lost data, a verify error),
2 usage error.
";

#[cfg(test)]
mod tests {
    #[test]
    fn every_option_the_parser_knows_is_described() {
        for option in super::super::options::known_options() {
            assert!(super::HELP.contains(&format!("--{option}")), "--{option} is not in shardbench --help");
        }
    }
}
