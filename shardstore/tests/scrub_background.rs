//! The background scrubber: it finds every injected fault that touches
//! live data and nothing else, puts damaged shards on a durable repair
//! list whose reads answer `Corruption`, repairs damaged metadata, resumes
//! a pass from its persisted cursor after a restart (and claims no
//! verification it did not finish), and paces itself by the deadline.

use shardstore::device::sim::{Fault, SimConfig, SimDevice, SimHandle};
use shardstore::error::{Error, OpKind};
use shardstore::format::{format, FormatOptions};
use shardstore::layout;
use shardstore::rng::Rng;
use shardstore::store::scrub::{FindingKind, ScrubSettings};
use shardstore::store::{Op, Store};

const DEVICE_BYTES: u64 = 128 << 20;
const EXTENT_BYTES: u64 = 8 << 20;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn new_store(seed: u64) -> (Store, SimHandle) {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_BYTES, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(EXTENT_BYTES), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    (Store::open(Box::new(dev)).unwrap(), h)
}

fn unthrottled() -> ScrubSettings {
    ScrubSettings { unthrottled: true, ..ScrubSettings::default() }
}

/// Steps the scrubber (and reaps its reads) until `done` holds; panics
/// if that takes unreasonably many steps.
fn scrub_until(store: &mut Store, mut done: impl FnMut(&Store) -> bool) {
    let mut finished = Vec::new();
    for _ in 0..100_000 {
        if done(store) {
            return;
        }
        store.scrub_step().unwrap();
        store.poll_gets(false, &mut finished).unwrap();
    }
    panic!("the scrubber did not get there: {:#?}", store.scrub_status());
}

fn passes(store: &Store) -> u64 {
    store.scrub_status().passes
}

const SIZES: [usize; 7] = [0, 1, 4000, 4096, 70_000, 1 << 20, (3 << 20) + 5];

fn fill(store: &mut Store, count: usize) {
    for (i, &len) in SIZES.iter().cycle().take(count).enumerate() {
        store.put(format!("k{i:02}").as_bytes(), &data(len, i as u64)).unwrap();
    }
}

#[test]
fn a_background_pass_finds_exactly_the_injected_faults_and_lists_the_damaged_shards() {
    let (mut store, h) = new_store(5);
    fill(&mut store, 21);
    store.put(b"gone", &data(50_000, 99)).unwrap();
    let dead = store.chunk_locations(b"gone").unwrap()[0];
    store.delete(b"gone").unwrap();

    let payload = |store: &Store, key: &str, chunk: usize| store.chunk_locations(key.as_bytes()).unwrap()[chunk].0;
    let flip_at = payload(&store, "k05", 0);
    h.rot_bit(flip_at + 777, 3);
    let multi = payload(&store, "k06", 2);
    h.rot_bit(multi + 5, 0);
    let header_at = payload(&store, "k10", 0) - 4096;
    h.rot_bit(header_at + 20, 1);
    let bad_sector = payload(&store, "k11", 0) + 8 * 4096;
    h.inject(Fault { op: OpKind::Read, range: Some((bad_sector, 512)), skip: 0, remaining: None });
    let copy2 = layout::copy_offset(DEVICE_BYTES, 2);
    h.rot_bit(copy2 + 40, 6);
    h.rot_bit(dead.0 + 10, 2);

    store.set_scrub_settings(unthrottled());
    scrub_until(&mut store, |s| passes(s) >= 1);
    let status = store.scrub_status();
    let mut found: Vec<(FindingKind, Option<String>, u64, u64)> =
        status.recent_findings.iter().map(|f| (f.kind, f.key.clone(), f.offset, f.len)).collect();
    found.sort_by_key(|f| f.2);
    let mut want = vec![
        (FindingKind::ChunkChecksum, Some("k05".to_owned()), flip_at, 1 << 20),
        (FindingKind::ChunkChecksum, Some("k06".to_owned()), multi, 1 << 20),
        (FindingKind::ChunkHeader, Some("k10".to_owned()), header_at, 4096),
        (FindingKind::ChunkUnreadable, Some("k11".to_owned()), bad_sector, 512),
        (FindingKind::SuperblockCopy, None, copy2, 4096),
    ];
    want.sort_by_key(|f| f.2);
    assert_eq!(found, want, "findings:\n{:#?}", status.recent_findings);
    let by_kind = |k: FindingKind| status.counters.findings[FindingKind::ALL.iter().position(|x| *x == k).unwrap()];
    assert_eq!(by_kind(FindingKind::ChunkChecksum), 2);
    assert_eq!(by_kind(FindingKind::ChunkUnreadable), 1);
    assert!(status.counters.read_errors >= 1, "the unreadable window was counted");
    // 21 shards: per cycle of seven sizes six one-chunk shards and a
    // four-chunk one; four chunks are damaged.
    assert_eq!(status.counters.chunks_verified, 3 * (6 + 4) - 4);

    // One more step records the damage durably and repairs the metadata.
    store.scrub_step().unwrap();
    let mut listed: Vec<(String, FindingKind)> = store.damaged_shards().into_iter().map(|d| (d.key, d.kind)).collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("k05".to_owned(), FindingKind::ChunkChecksum),
            ("k06".to_owned(), FindingKind::ChunkChecksum),
            ("k10".to_owned(), FindingKind::ChunkHeader),
            ("k11".to_owned(), FindingKind::ChunkUnreadable),
        ]
    );
    for key in ["k05", "k06", "k10", "k11"] {
        match store.get(key.as_bytes()) {
            Err(Error::Corruption { what, .. }) => assert!(what.contains("repair list"), "{what}"),
            other => panic!("{key}: a listed shard was answered with {:?}", other.map(|b| b.len())),
        }
    }
    for i in [0usize, 1, 2, 3, 4, 7, 12, 20] {
        assert_eq!(store.get(format!("k{i:02}").as_bytes()).unwrap(), data(SIZES[i % 7], i as u64), "k{i:02}");
    }

    // The list survives a crash; the superblock copy was rewritten.
    h.clear_faults();
    h.crash();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    assert_eq!(store.damaged_shards().len(), 4, "the repair list is durable");
    assert!(matches!(store.get(b"k10"), Err(Error::Corruption { .. })));
    let offline = store.scrub_pass(|_, _| {});
    assert!(
        offline.findings.iter().all(|f| f.kind != FindingKind::SuperblockCopy),
        "the damaged superblock copy was repaired: {:#?}",
        offline.findings
    );
    // Replacing a shard takes it off the list.
    store.put(b"k05", &data(10, 1)).unwrap();
    assert_eq!(store.damaged_shards().len(), 3);
    assert_eq!(store.get(b"k05").unwrap(), data(10, 1));
}

#[test]
fn damage_to_the_log_is_found_and_repaired_by_a_new_checkpoint() {
    let (mut store, h) = new_store(6);
    fill(&mut store, 14);
    // The puts are in the log after the initial checkpoint: damage its
    // first block (the index in memory is intact).
    let sb = store.superblock().clone();
    let half = sb.layout.meta_size_bytes / 2;
    let log0 = sb.layout.meta_offset + u64::from(sb.store.half) * half + sb.store.checkpoint_len_bytes;
    h.rot_bit(log0 + 100, 4);
    store.set_scrub_settings(unthrottled());
    scrub_until(&mut store, |s| passes(s) >= 1);
    let kinds: Vec<FindingKind> = store.scrub_status().recent_findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::LogBlock]);
    let epoch = store.superblock().store.epoch;
    store.scrub_step().unwrap();
    assert!(store.superblock().store.epoch > epoch, "a new checkpoint supersedes the damaged log");
    // No healthy shard was lost: every one is there after a crash.
    h.crash();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    for (i, &len) in SIZES.iter().cycle().take(14).enumerate() {
        assert_eq!(store.get(format!("k{i:02}").as_bytes()).unwrap(), data(len, i as u64));
    }
    assert!(store.scrub_pass(|_, _| {}).is_clean());
}

#[test]
fn a_restart_resumes_the_pass_from_the_persisted_cursor_and_claims_nothing_unfinished() {
    let (mut store, h) = new_store(7);
    // About 10 MiB per cycle of sizes: fill several extents.
    fill(&mut store, 70);
    let used: Vec<u32> =
        store.extents().iter().enumerate().filter(|(_, e)| e.live_blocks > 0).map(|(i, _)| i as u32).collect();
    assert!(used.len() >= 6, "data spans {} extents", used.len());
    let written: Vec<u64> = store.extents().iter().map(|e| e.checked_ms).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let scrub_started = shardstore::superblock::now_unix_ms();
    store.set_scrub_settings(unthrottled());
    let stop_at = used[3];
    scrub_until(&mut store, |s| s.scrub_status().next_extent >= stop_at);
    let before = store.scrub_status();
    assert_eq!(before.passes, 0);
    // Verification times of the extents behind the cursor moved on; the
    // others did not.
    for &e in &used {
        let now = store.extents()[e as usize].checked_ms;
        if e < stop_at {
            // Verified when the scan of the extent started.
            assert!(
                now > written[e as usize] && now >= scrub_started && now <= shardstore::superblock::now_unix_ms(),
                "extent {e} was verified at {now} (scrub started {scrub_started})"
            );
        } else {
            assert_eq!(now, written[e as usize], "extent {e} not verified yet");
        }
    }
    let verified_before = before.counters.chunks_verified;
    // Start on the next extent, then lose power in the middle of it.
    store.scrub_step().unwrap();
    h.crash();
    drop(store);

    let mut store = Store::open(Box::new(h.attach())).unwrap();
    let after = store.scrub_status();
    assert_eq!(after.next_extent, stop_at, "the cursor was persisted");
    assert_eq!(after.pass_started_ms, before.pass_started_ms);
    assert_eq!(store.extents()[stop_at as usize].checked_ms, written[stop_at as usize], "no claim for a half scan");
    let total_chunks: u64 = 10 * 10; // 70 shards: ten cycles of six one-chunk shards and one of four
    store.set_scrub_settings(unthrottled());
    scrub_until(&mut store, |s| passes(s) >= 1);
    let resumed = store.scrub_status().counters.chunks_verified;
    assert_eq!(verified_before + resumed, total_chunks, "the pass went on where it stopped, not from zero");
    assert!(store.scrub_status().oldest_unverified_age_ms.unwrap() < 60_000);
}

#[test]
fn the_rate_follows_the_deadline_the_data_and_the_ceiling() {
    let (mut store, _h) = new_store(8);
    let now = shardstore::superblock::now_unix_ms();
    assert!(store.scrub_status().oldest_unverified_age_ms.is_none(), "nothing stored, nothing unverified");
    fill(&mut store, 7);
    let live = store.usage().live_bytes;
    let day = 24 * 3600 * 1000;
    store.set_scrub_settings(ScrubSettings { deadline_ms: day, ..ScrubSettings::default() });
    // A pass aims to end within 90% of the deadline.
    let want = live as f64 * 1000.0 / (0.9 * day as f64);
    let rate = store.scrub_rate(now) as f64;
    assert!((rate - want).abs() <= want * 0.01 + 1.0, "rate {rate}, want {want}");
    fill(&mut store, 21);
    assert!(store.scrub_rate(now) as f64 > 2.5 * want, "more data, a higher rate");
    store.set_scrub_settings(ScrubSettings { deadline_ms: day, rate_bytes_max: Some(10), ..ScrubSettings::default() });
    assert_eq!(store.scrub_rate(now), 10);
    store.set_scrub_settings(ScrubSettings { unthrottled: true, ..ScrubSettings::default() });
    assert_eq!(store.scrub_rate(now), u64::MAX);
    // Paced at the default deadline, a step reads nothing yet: the
    // allowance starts empty.
    store.set_scrub_settings(ScrubSettings::default());
    for _ in 0..50 {
        store.scrub_step().unwrap();
    }
    assert_eq!(store.scrub_status().counters.chunks_verified, 0);
}

/// Flips one bit of a real file through the page cache and syncs it, so
/// the store's O_DIRECT reads see it.
fn flip_file_bit(path: &std::path::Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ (1 << bit)], offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn on_a_real_file_the_background_pass_finds_the_injected_faults_through_io_uring() {
    use shardstore::device::{self, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.img");
    std::fs::File::create(&path).unwrap().set_len(DEVICE_BYTES).unwrap();
    {
        let mut dev = device::open(&path, &OpenOptions::default()).unwrap();
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(EXTENT_BYTES), ..FormatOptions::default() }).unwrap();
    }
    let mut store = Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    fill(&mut store, 21);
    let payload = |store: &Store, key: &str, chunk: usize| store.chunk_locations(key.as_bytes()).unwrap()[chunk].0;
    let flip_at = payload(&store, "k05", 0);
    let multi = payload(&store, "k13", 3);
    let header_at = payload(&store, "k17", 0) - 4096;
    flip_file_bit(&path, flip_at + 4095, 7);
    flip_file_bit(&path, multi + 1, 1);
    flip_file_bit(&path, header_at + 20, 2);
    let copy3 = layout::copy_offset(DEVICE_BYTES, 3);
    flip_file_bit(&path, copy3 + 300, 5);
    // The checkpoint the store opened from (its first block, the header).
    let sb = store.superblock().clone();
    let checkpoint = sb.layout.meta_offset + u64::from(sb.store.half) * (sb.layout.meta_size_bytes / 2);
    flip_file_bit(&path, checkpoint + 10, 0);

    store.set_scrub_settings(unthrottled());
    scrub_until(&mut store, |s| passes(s) >= 1);
    let status = store.scrub_status();
    let mut found: Vec<(FindingKind, Option<String>, u64)> =
        status.recent_findings.iter().map(|f| (f.kind, f.key.clone(), f.offset)).collect();
    found.sort_by_key(|f| f.2);
    let mut want = vec![
        (FindingKind::ChunkChecksum, Some("k05".to_owned()), flip_at),
        (FindingKind::ChunkChecksum, Some("k13".to_owned()), multi),
        (FindingKind::ChunkHeader, Some("k17".to_owned()), header_at),
        (FindingKind::SuperblockCopy, None, copy3),
        (FindingKind::Checkpoint, None, checkpoint),
    ];
    want.sort_by_key(|f| f.2);
    assert_eq!(found, want, "findings:\n{:#?}", status.recent_findings);
    // The next step lists the shards and writes a new checkpoint (which
    // rewrites every superblock copy); a restart finds everything else
    // intact.
    store.scrub_step().unwrap();
    assert_eq!(store.damaged_shards().len(), 3);
    store.close().unwrap();
    let mut store = Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    assert_eq!(store.damaged_shards().len(), 3);
    for (i, &len) in SIZES.iter().cycle().take(21).enumerate() {
        let key = format!("k{i:02}");
        match store.get(key.as_bytes()) {
            Ok(bytes) => assert_eq!(bytes, data(len, i as u64), "{key}"),
            Err(Error::Corruption { .. }) => assert!(["k05", "k13", "k17"].contains(&key.as_str()), "{key}"),
            Err(e) => panic!("{key}: {e}"),
        }
    }
    let offline = store.scrub_pass(|_, _| {});
    let kinds: Vec<FindingKind> = offline.findings.iter().map(|f| f.kind).collect();
    assert!(!kinds.contains(&FindingKind::SuperblockCopy) && !kinds.contains(&FindingKind::Checkpoint), "{kinds:?}");
}

/// Pacing, on the store thread: with a deadline scaled down to seconds, a
/// fault in the last shard of a pass is found when the pass reaches it,
/// about 90% of the deadline after the pass began, not at once. At the
/// default 14-day deadline the same pass takes 12.6 days (docs/api.md).
#[test]
fn a_paced_pass_reaches_the_last_shard_near_ninety_percent_of_the_deadline() {
    use std::time::{Duration, Instant};
    let (mut store, h) = new_store(12);
    for i in 0..48 {
        store.put(format!("p{i:02}").as_bytes(), &data(1 << 20, i)).unwrap();
    }
    let last = store.chunk_locations(b"p47").unwrap()[0].0;
    store.close().unwrap();
    let (handle, join) = shardstore::store::thread::spawn(Box::new(h.attach())).unwrap();
    h.rot_bit(last + 100, 1);
    let deadline = Duration::from_secs(4);
    let started = Instant::now();
    handle.set_scrub(ScrubSettings { deadline_ms: deadline.as_millis() as u64, ..ScrubSettings::default() }).unwrap();
    let found = loop {
        let st = handle.scrub_status().unwrap();
        if st.counters.findings.iter().sum::<u64>() > 0 {
            break started.elapsed();
        }
        assert!(started.elapsed() < deadline * 3, "not found within three deadlines: {st:#?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("48 MiB paced for a {deadline:?} deadline: the last shard's fault found after {found:?}");
    // The allowance grows at the rate: the last of 48 MiB is not reached
    // before most of the pass's time (90% of the deadline) has passed...
    assert!(found >= deadline * 7 / 10, "found after {found:?}: the pass was not paced");
    // ...and the pass ends near its target, 90% of the deadline.
    assert!(found <= deadline * 2, "found after {found:?}: the pass fell far behind its target");
    handle.close().unwrap();
    join.join().unwrap();
}

/// Puts `count` small shards in one batch (more than a one-flush batch, so
/// their records share a header block) and returns their keys and bytes.
fn put_group(store: &mut Store, prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    let shards: Vec<(String, Vec<u8>)> =
        (0..count).map(|i| (format!("{prefix}{i:02}"), data(3000 + i * 100, 500 + i as u64))).collect();
    let ops: Vec<Op> = shards.iter().map(|(k, v)| Op::put(k.as_bytes().to_vec(), v.clone())).collect();
    assert!(store.commit(&ops).iter().all(Result::is_ok));
    shards
}

/// Payload blocks of a shard of `len` bytes.
fn blocks(len: usize) -> u64 {
    len.div_ceil(4096) as u64
}

/// Small shards committed together share one header block (a group): each
/// payload right after the one before, 4 KiB of headers for all. Both
/// scrubbers verify each member by its own header and payload: rot in one
/// payload, in one member's header, or in the first member's header (the
/// one the block starts with) damages that shard alone, and fsck walks the
/// group's block to every member.
#[test]
fn each_member_of_a_record_group_is_verified_on_its_own() {
    let (mut store, h) = new_store(21);
    let shards = put_group(&mut store, "g", 24);
    let payload = |store: &Store, key: &str| store.chunk_locations(key.as_bytes()).unwrap()[0].0;
    let header_block = payload(&store, "g00") - 4096;
    for pair in shards.windows(2) {
        assert_eq!(payload(&store, &pair[1].0), payload(&store, &pair[0].0) + blocks(pair[0].1.len()) * 4096);
    }
    let written: u64 = 1 + shards.iter().map(|(_, v)| blocks(v.len())).sum::<u64>();
    assert_eq!(store.extents().iter().map(|e| u64::from(e.write_blocks)).sum::<u64>(), written);
    let fsck = store.fsck();
    assert!(fsck.is_consistent(), "{:?}", fsck.problems);
    assert_eq!((fsck.records_found, fsck.records_live), (24, 24));

    // Keys of three bytes: each header takes 72 bytes of the block.
    let g05 = payload(&store, "g05");
    h.rot_bit(g05 + 100, 2);
    h.rot_bit(header_block + 10 * 72 + 30, 5);
    h.rot_bit(header_block + 12, 0);
    let mut want = vec![
        (FindingKind::ChunkHeader, Some("g00".to_owned()), header_block, 4096),
        (FindingKind::ChunkChecksum, Some("g05".to_owned()), g05, shards[5].1.len() as u64),
        (FindingKind::ChunkHeader, Some("g10".to_owned()), header_block, 4096),
    ];
    want.sort();
    let sorted = |findings: &[shardstore::store::scrub::Finding]| {
        let mut v: Vec<_> = findings.iter().map(|f| (f.kind, f.key.clone(), f.offset, f.len)).collect();
        v.sort();
        v
    };
    store.set_scrub_settings(unthrottled());
    scrub_until(&mut store, |s| passes(s) >= 1);
    let status = store.scrub_status();
    assert_eq!(sorted(&status.recent_findings), want, "{:#?}", status.recent_findings);
    assert_eq!(status.counters.chunks_verified, 21);
    let offline = store.scrub_pass(|_, _| {});
    assert_eq!(sorted(&offline.findings), want, "{:#?}", offline.findings);
    assert_eq!(offline.chunks_verified, 21);
    // fsck walks past the damaged first header to every other member: the
    // three damaged shards are its only problems, each named.
    let fsck = store.fsck();
    assert_eq!(fsck.records_found, 22, "every member but the two whose headers are damaged");
    let named = |key: &str| fsck.problems.iter().filter(|p| p.contains(&format!("\"{key}\""))).count();
    assert_eq!(fsck.problems.len(), 3, "{:#?}", fsck.problems);
    assert!(["g00", "g05", "g10"].iter().all(|k| named(k) == 1), "{:#?}", fsck.problems);
    assert!(fsck.problems.iter().any(|p| p.contains("\"g00\"") && p.contains("first of a record group")));
    assert!(fsck.problems.iter().any(|p| p.contains("\"g10\"") && p.contains("header") && p.contains("damaged")));
    assert!(fsck.problems.iter().all(|p| !p.contains("points at nothing")), "{:#?}", fsck.problems);
    for (key, value) in &shards {
        match key.as_str() {
            // Damaged (the scrubber listed them for repair): never served.
            "g00" | "g05" | "g10" => {
                assert!(matches!(store.get(key.as_bytes()), Err(Error::Corruption { .. })), "{key}");
            }
            _ => assert_eq!(&store.get(key.as_bytes()).unwrap(), value, "{key}"),
        }
    }
    // Every header of the group damaged: the walk finds none of them, and
    // fsck says each member's header is damaged, never that the index
    // points at nothing (the data may be there; the header cannot vouch).
    for i in 0..24 {
        h.rot_bit(header_block + i * 72 + 30, 3);
    }
    let fsck = store.fsck();
    assert_eq!(fsck.records_found, 0, "{:#?}", fsck.problems);
    assert_eq!(fsck.problems.len(), 24, "{:#?}", fsck.problems);
    for (key, _) in &shards {
        let about: Vec<_> = fsck.problems.iter().filter(|p| p.contains(&format!("\"{key}\""))).collect();
        assert!(about.len() == 1 && about[0].contains("header") && about[0].contains("damaged"), "{key}: {about:?}");
    }
}

/// Reclamation moves the live members of a group as a group again (one
/// header block for the ones moved together, not one each), and after it
/// and a restart every shard reads back and fsck finds the store
/// consistent.
#[test]
fn reclamation_moves_group_members_into_a_group() {
    let (mut store, h) = new_store(22);
    let shards = put_group(&mut store, "m", 30);
    // Fill the rest of the extent, seal it with a shard that does not fit,
    // then kill the filler and every other member.
    store.put(b"filler", &data(7 << 20, 1)).unwrap();
    store.put(b"next", &data(2 << 20, 2)).unwrap();
    store.delete(b"filler").unwrap();
    let kept: Vec<&(String, Vec<u8>)> = shards.iter().step_by(2).collect();
    for (key, _) in shards.iter().skip(1).step_by(2) {
        store.delete(key.as_bytes()).unwrap();
    }
    let victim = (store.chunk_locations(b"m00").unwrap()[0].0 - store.superblock().layout.data_offset) / EXTENT_BYTES;
    let (reclaimed, moved) = store.reclaim().unwrap().expect("the group's extent is mostly dead");
    assert_eq!(u64::from(reclaimed), victim);
    let moved_blocks: u64 = 1 + kept.iter().map(|(_, v)| blocks(v.len())).sum::<u64>();
    assert_eq!(moved, moved_blocks * 4096, "fifteen members moved under one header block");
    let payload = |store: &Store, key: &str| store.chunk_locations(key.as_bytes()).unwrap()[0].0;
    for pair in kept.windows(2) {
        assert_eq!(payload(&store, &pair[1].0), payload(&store, &pair[0].0) + blocks(pair[0].1.len()) * 4096);
    }
    let check = |store: &mut Store| {
        for (key, value) in &kept {
            assert_eq!(&store.get(key.as_bytes()).unwrap(), value, "{key}");
        }
        assert_eq!(store.get(b"next").unwrap(), data(2 << 20, 2));
        let fsck = store.fsck();
        assert!(fsck.is_consistent(), "{:?}", fsck.problems);
        store.check_invariants();
    };
    check(&mut store);
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    check(&mut store);
    assert!(store.scrub_pass(|_, _| {}).is_clean());
}

/// Puts `count` shards of 1 MiB (one chunk each; seven fill an extent).
fn put_mib(store: &mut Store, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{i:02}")).collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(key.as_bytes(), &data(1 << 20, i as u64)).unwrap();
    }
    keys
}

fn extent_of(store: &Store, key: &str) -> u64 {
    (store.chunk_locations(key.as_bytes()).unwrap()[0].0 - store.superblock().layout.data_offset) / EXTENT_BYTES
}

#[test]
fn one_walk_of_the_index_lists_the_chunks_of_a_run_of_extents() {
    // Runs as large as the default allows, of two extents' chunks at
    // most, and of one extent each (its chunks alone are past the bound).
    for (chunks_max, runs) in [(None, 1), (Some(14), 3), (Some(0), 5)] {
        let (mut store, _h) = new_store(21);
        let keys = put_mib(&mut store, "r", 30);
        let extents: std::collections::BTreeSet<u64> = keys.iter().map(|k| extent_of(&store, k)).collect();
        assert_eq!(extents.len(), 5, "30 shards of 1 MiB, seven to an extent");
        if let Some(max) = chunks_max {
            store.set_scrub_run_chunks_max(max);
        }
        store.set_scrub_settings(unthrottled());
        scrub_until(&mut store, |s| passes(s) >= 1);
        let counters = store.scrub_status().counters;
        // The step that completes a pass begins the next pass's first run.
        assert_eq!(store.scrub_runs_listed(), runs + 1, "walks of the index, runs of {chunks_max:?} chunks");
        assert_eq!(counters.chunks_verified, 30, "runs of {chunks_max:?} chunks");
        assert_eq!(counters.extents_verified, extents.len() as u64, "runs of {chunks_max:?} chunks");
        assert!(counters.findings.iter().all(|n| *n == 0));
    }
}

#[test]
fn an_extent_reset_after_its_run_was_listed_is_listed_again_with_what_it_holds_now() {
    let (mut store, h) = new_store(22);
    let keys = put_mib(&mut store, "a", 21);
    let second = extent_of(&store, "a07");
    assert!(keys[7..14].iter().all(|k| extent_of(&store, k) == second), "the second seven share an extent");
    store.set_scrub_settings(unthrottled());
    // The first step lists the run (the index is small: one step) and
    // reads nothing yet.
    store.scrub_step().unwrap();
    assert_eq!(store.scrub_runs_listed(), 1);
    assert_eq!(store.scrub_status().counters.chunks_verified, 0);

    // The second extent empties, is reset by the next commit, and new
    // shards fill it again; one of those rots.
    for key in &keys[7..14] {
        store.delete(key.as_bytes()).unwrap();
    }
    let mut reused = None;
    for i in 0..20 {
        let key = format!("b{i:02}");
        store.put(key.as_bytes(), &data(1 << 20, 100 + i)).unwrap();
        if extent_of(&store, &key) == second {
            reused = Some(key);
            break;
        }
    }
    let reused = reused.expect("new shards went to the reset extent");
    let rotted = store.chunk_locations(reused.as_bytes()).unwrap()[0].0 + 1000;
    h.rot_bit(rotted, 4);

    scrub_until(&mut store, |s| passes(s) >= 1);
    let status = store.scrub_status();
    let found: Vec<(FindingKind, Option<String>, u64)> =
        status.recent_findings.iter().map(|f| (f.kind, f.key.clone(), f.offset)).collect();
    assert_eq!(
        found,
        vec![(FindingKind::ChunkChecksum, Some(reused.clone()), rotted - 1000)],
        "the reset extent's new shard was read, its old listing not used"
    );
    // The first run, the run listed again from the reset extent, and the
    // next pass's first (begun by the step that completed the pass).
    assert_eq!(store.scrub_runs_listed(), 3, "the run was listed again from the reset extent");
    match store.get(reused.as_bytes()) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("the rotted shard was answered with {:?}", other.map(|b| b.len())),
    }
}
