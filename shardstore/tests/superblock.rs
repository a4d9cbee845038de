//! The superblock's promises, on the simulated device: a table of copy
//! patterns with their expected outcome, a crash at every write of an
//! update (and of a format, and of a repair), and every single-bit flip of
//! a copy detected.

use shardstore::device::sim::{Fate, SimConfig, SimDevice, SimHandle};
use shardstore::device::{BlockDevice, BlockDeviceExt};
use shardstore::error::Error;
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::superblock::{self, select, CopyProblem, CopyStatus, SelectError, Superblock};

const DEVICE_SIZE: u64 = 32 << 20;
const EXTENT: u64 = 4 << 20;

fn options() -> FormatOptions {
    FormatOptions { extent_size_bytes: Some(EXTENT), ..FormatOptions::default() }
}

/// A formatted device at version 2, with version 1 returned too.
fn device_at_v2(seed: u64) -> (SimDevice, Superblock, Superblock) {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, seed));
    let v1 = format(&mut dev, &options()).unwrap();
    let v2 = superblock::commit(&mut dev, &v1, |sb| sb.clean_shutdown = false).unwrap();
    (dev, v1, v2)
}

fn offset(sb: &Superblock, i: usize) -> u64 {
    sb.layout.copy_offset(i)
}

#[derive(Debug, PartialEq)]
enum Expect {
    Opens { sequence: u64, repaired: Vec<usize> },
    Refused(&'static str),
}

#[test]
fn copy_pattern_table() {
    type Damage = fn(&SimHandle, &Superblock, &Superblock);
    let table: Vec<(&str, Damage, Expect)> = vec![
        ("all good", |_, _, _| {}, Expect::Opens { sequence: 2, repaired: vec![] }),
        (
            "one torn copy",
            |h, _, v2| h.scribble(offset(v2, 1) + 512, &[0xAB; 512]),
            Expect::Opens { sequence: 2, repaired: vec![1] },
        ),
        (
            "two bad copies, one per zone",
            |h, _, v2| {
                h.rot_bit(offset(v2, 0) + 100, 3);
                h.rot_bit(offset(v2, 3) + 4000, 7);
            },
            Expect::Opens { sequence: 2, repaired: vec![0, 3] },
        ),
        (
            "both tail copies lost",
            |h, _, v2| {
                h.scribble(offset(v2, 2), &[0; 4096]);
                h.scribble(offset(v2, 3), &[0; 4096]);
            },
            Expect::Opens { sequence: 2, repaired: vec![2, 3] },
        ),
        (
            "three bad copies",
            |h, _, v2| {
                for i in [0, 1, 3] {
                    h.rot_bit(offset(v2, i) + 20, 0);
                }
            },
            Expect::Refused("no superblock version is held by 2 valid copies"),
        ),
        (
            "a stale copy",
            |h, v1, v2| h.scribble(offset(v2, 2), &v1.encode(2)),
            Expect::Opens { sequence: 2, repaired: vec![2] },
        ),
        (
            "two stale copies: newest quorum wins",
            |h, v1, v2| {
                h.scribble(offset(v2, 2), &v1.encode(2));
                h.scribble(offset(v2, 3), &v1.encode(3));
            },
            Expect::Opens { sequence: 2, repaired: vec![2, 3] },
        ),
        (
            "a misdirected copy",
            |h, _, v2| h.scribble(offset(v2, 0), &v2.encode(1)),
            Expect::Opens { sequence: 2, repaired: vec![0] },
        ),
        (
            "a fork: two different versions with one sequence",
            |h, v1, v2| {
                let mut other = v2.clone();
                other.node_id = 77;
                other.parent_checksum = v1.version_checksum();
                h.scribble(offset(v2, 2), &other.encode(2));
                h.scribble(offset(v2, 3), &other.encode(3));
            },
            Expect::Refused("superblock fork"),
        ),
        (
            "a broken chain: the older copy is not the parent",
            |h, v1, v2| {
                let mut stranger = v1.clone();
                stranger.node_id = 99;
                h.scribble(offset(v2, 2), &stranger.encode(2));
            },
            Expect::Refused("broken superblock chain"),
        ),
        (
            "an update that never reached a quorum",
            |h, _, v2| {
                let mut v3 = v2.clone();
                v3.sequence = 3;
                v3.parent_checksum = v2.version_checksum();
                h.scribble(offset(v2, 0), &v3.encode(0));
            },
            Expect::Opens { sequence: 2, repaired: vec![0] },
        ),
        (
            "a newer copy from another history",
            |h, _, v2| {
                let mut v3 = v2.clone();
                v3.sequence = 3;
                v3.parent_checksum = 12345;
                h.scribble(offset(v2, 0), &v3.encode(0));
            },
            Expect::Refused("broken superblock chain"),
        ),
        (
            "a copy from another device",
            |h, _, v2| {
                let mut foreign = v2.clone();
                foreign.device_uuid[0] ^= 1;
                h.scribble(offset(v2, 3), &foreign.encode(3));
            },
            Expect::Refused("different devices"),
        ),
        (
            "all copies blank",
            |h, _, v2| {
                for i in 0..4 {
                    h.scribble(offset(v2, i), &[0; 4096]);
                }
            },
            Expect::Refused("not a shardnode device"),
        ),
        (
            "a future format version everywhere",
            |h, _, v2| {
                for i in 0..4 {
                    let mut b = v2.encode(i);
                    b[16] = 9;
                    let crc = crc32c::crc32c(&b[12..]);
                    b[8..12].copy_from_slice(&crc.to_le_bytes());
                    h.scribble(offset(v2, i), &b);
                }
            },
            Expect::Refused("unsupported format version 9"),
        ),
    ];
    for (seed, (name, damage, expect)) in table.into_iter().enumerate() {
        let (dev, v1, v2) = device_at_v2(seed as u64);
        let h = dev.handle();
        damage(&h, &v1, &v2);
        let mut dev = h.attach();
        let got = match superblock::open(&mut dev, true) {
            Ok(opened) => Expect::Opens { sequence: opened.superblock.sequence, repaired: opened.repaired },
            Err(e) => {
                let msg = e.to_string();
                let Expect::Refused(want) = expect else { panic!("{name}: expected to open, got: {msg}") };
                assert!(msg.contains(want), "{name}: error {msg:?} should contain {want:?}");
                continue;
            }
        };
        assert_eq!(got, expect, "{name}");
        // After repair every copy holds the version in force.
        let again = superblock::open(&mut dev, false).unwrap();
        let statuses = select(&again.copies).unwrap().status;
        assert_eq!(statuses, [CopyStatus::Current; 4], "{name}: repair left copies behind");
    }
}

type FateFn = fn(&mut Rng, &[u64], u64, usize) -> Fate;

#[test]
fn crash_at_every_write_of_an_update_opens_old_or_new() {
    // The offsets of the four copy slots (the same layout for every seed).
    let slots: Vec<u64> = {
        let (_, _, v2) = device_at_v2(0);
        (0..4).map(|i| offset(&v2, i)).collect()
    };
    let fates: [(&str, FateFn); 5] = [
        ("drop all", |_, _, _, _| Fate::Drop),
        ("persist all", |_, _, _, _| Fate::Persist),
        ("tear", |rng, _, _, len| Fate::Tear((0..len / 512).map(|_| rng.chance(1, 2)).collect())),
        // The write lands on another copy's slot: the strongest adversary
        // for the quorum, since it destroys a copy and misses its own.
        ("misdirect onto another slot", |rng, slots, at, _| {
            let others: Vec<u64> = slots.iter().copied().filter(|&o| o != at).collect();
            Fate::Misdirect(others[rng.below(others.len() as u64) as usize])
        }),
        ("random", |rng, slots, _, len| match rng.below(4) {
            0 => Fate::Drop,
            1 => Fate::Persist,
            2 => Fate::Misdirect(slots[rng.below(4) as usize]),
            _ => Fate::Tear((0..len / 512).map(|_| rng.chance(1, 2)).collect()),
        }),
    ];
    let mut steps_seen = 0;
    for (fate_name, fate) in fates {
        for seed in 0..8u64 {
            // An update is 1 flush + 4 x (write, flush) = 9 steps.
            for budget in 0..=9u64 {
                let (dev, v1, v2) = device_at_v2(seed);
                let h = dev.handle();
                let mut dev = h.attach();
                h.cut_power_after(budget);
                let result = superblock::commit(&mut dev, &v2, |sb| sb.clean_shutdown = true);
                let committed = result.is_ok();
                let mut rng = Rng::new(seed * 1000 + budget);
                h.crash_with(|_, w| fate(&mut rng, &slots, w.offset, w.data.len()));
                let mut dev = h.attach();
                let opened = superblock::open(&mut dev, true)
                    .unwrap_or_else(|e| panic!("fate {fate_name} seed {seed} budget {budget}: open failed: {e}"));
                let seq = opened.superblock.sequence;
                assert!(seq == 2 || seq == 3, "fate {fate_name} seed {seed} budget {budget}: opened sequence {seq}");
                if committed {
                    assert_eq!(seq, 3, "an acknowledged update must survive the crash");
                    assert!(opened.superblock.clean_shutdown);
                } else if seq == 2 {
                    assert_eq!(opened.superblock, v2);
                }
                assert_ne!(opened.superblock, v1);
                steps_seen += 1;
            }
        }
    }
    assert_eq!(steps_seen, 5 * 8 * 10);
}

#[test]
fn crash_during_repair_still_opens() {
    for budget in 0..=4u64 {
        let (dev, v1, v2) = device_at_v2(budget);
        let h = dev.handle();
        h.scribble(offset(&v2, 1), &v1.encode(1));
        h.rot_bit(offset(&v2, 3) + 9, 1);
        let mut dev = h.attach();
        h.cut_power_after(budget);
        let _ = superblock::open(&mut dev, true);
        h.crash();
        let mut dev = h.attach();
        let opened = superblock::open(&mut dev, true).unwrap();
        assert_eq!(opened.superblock, v2, "budget {budget}");
    }
}

#[test]
fn interrupted_format_never_opens_as_a_mix() {
    for budget in 0..=12u64 {
        // A device formatted once, then re-formatted with --force and cut.
        let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, budget));
        let old = format(&mut dev, &options()).unwrap();
        let h = dev.handle();
        h.cut_power_after(budget);
        let result = format(&mut dev, &FormatOptions { force: true, ..options() });
        h.crash();
        let mut dev = h.attach();
        match superblock::open(&mut dev, true) {
            Ok(opened) => {
                if let Ok(new) = &result {
                    assert_eq!(&opened.superblock, new, "budget {budget}: a completed format must open");
                } else {
                    // Either identity is acceptable while incomplete, but
                    // never a version that was not written as a whole.
                    assert!(opened.superblock == old || opened.superblock.sequence == 1, "budget {budget}");
                }
            }
            Err(e) => {
                assert!(result.is_err(), "budget {budget}: completed format failed to open: {e}");
                let refused_cleanly = matches!(e, Error::NotFormatted { .. } | Error::Superblock { .. });
                assert!(refused_cleanly, "budget {budget}: unexpected error {e}");
            }
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_copy_is_detected() {
    let (_, _, v2) = device_at_v2(1);
    for slot in 0..4 {
        let good = v2.encode(slot);
        assert_eq!(Superblock::decode(&good, slot).unwrap(), v2);
        let mut bytes = good.clone();
        for bit in 0..bytes.len() * 8 {
            bytes[bit / 8] ^= 1 << (bit % 8);
            let decoded = Superblock::decode(&bytes, slot);
            assert!(decoded.is_err(), "slot {slot}: flip of bit {bit} went unnoticed");
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        assert_eq!(bytes, good);
    }
}

#[test]
fn bit_flips_on_the_device_are_repaired_at_open() {
    let mut rng = Rng::new(42);
    for round in 0..64 {
        let (dev, _, v2) = device_at_v2(round);
        let h = dev.handle();
        let slot = rng.below(4) as usize;
        let at = offset(&v2, slot) + rng.below(4096);
        h.rot_bit(at, rng.below(8) as u8);
        let mut dev = h.attach();
        let opened = superblock::open(&mut dev, true).unwrap();
        assert_eq!(opened.superblock, v2);
        assert_eq!(opened.repaired, vec![slot], "round {round}: flip at {at}");
        assert!(matches!(opened.copies[slot].copy, Err(CopyProblem::BadChecksum)));
    }
}

#[test]
fn format_refuses_existing_data_unless_forced() {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, 5));
    format(&mut dev, &options()).unwrap();
    let err = format(&mut dev, &options()).unwrap_err();
    assert!(err.to_string().contains("holds a shardnode store"), "{err}");
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, 6));
    dev.handle().scribble(1024, &[0x53, 0xEF, 0, 0]); // ext4 magic at 1080
    dev.handle().scribble(1080, &[0x53, 0xEF]);
    let err = format(&mut dev, &options()).unwrap_err();
    assert!(err.to_string().contains("ext2/ext3/ext4"), "{err}");
    let sb = format(&mut dev, &FormatOptions { force: true, ..options() }).unwrap();
    assert_eq!(superblock::open(&mut dev, false).unwrap().superblock, sb);
}

#[test]
fn format_rejects_bad_geometry_with_a_reason() {
    let mut dev = SimDevice::new(SimConfig::new(6 << 20, 7));
    let err = format(&mut dev, &options()).unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, 8));
    let err = format(&mut dev, &FormatOptions { extent_size_bytes: Some(3 << 20), ..options() }).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
    assert!(superblock::open(&mut dev, false).is_err(), "a refused format writes nothing");
    assert!(dev.read_at(0, 4096).unwrap().as_slice().iter().all(|&b| b == 0));
}

#[test]
fn select_reports_not_formatted_for_foreign_bytes() {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_SIZE, 9));
    dev.handle().scribble(0, b"XFSB");
    let copies = superblock::read_copies(&mut dev);
    assert_eq!(select(&copies).unwrap_err(), SelectError::NotFormatted);
    assert_eq!(dev.in_flight(), 0);
}

#[test]
fn a_store_formatted_on_512_byte_sectors_opens_on_4096_byte_sectors() {
    // The loop device (512) and its backing file (4096) are the same store.
    let mut small = SimDevice::new(SimConfig::new(DEVICE_SIZE, 11));
    let sb = format(&mut small, &options()).unwrap();
    let image = small.handle().durable_image();
    let mut big = SimDevice::new(SimConfig { sector_size: 4096, ..SimConfig::new(DEVICE_SIZE, 12) });
    big.handle().scribble(0, &image);
    let opened = superblock::open(&mut big, true).unwrap();
    assert_eq!(opened.superblock, sb);
    assert!(opened.repaired.is_empty());
}
