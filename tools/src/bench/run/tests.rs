use super::*;

#[test]
fn the_random_map_touches_every_block_once_per_pass() {
    let mut map = RandomMap::new(1000);
    let mut rng = Rng::new(3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let b = map.next_free(rng.below(1000));
        assert_eq!(map.mark(b, 1), 1);
        assert!(seen.insert(b), "block {b} twice in one pass");
    }
    assert_eq!(seen.len(), 1000);
    // A full map starts the next pass.
    let b = map.next_free(999);
    assert!(b < 1000 && map.set == 0);
    // Marking stops at a touched block.
    let mut map = RandomMap::new(10);
    assert_eq!(map.mark(4, 1), 1);
    assert_eq!(map.mark(1, 8), 3, "blocks 1-3, then 4 was touched");
}

#[test]
fn sequential_picks_wrap_and_random_ones_stay_inside() {
    let mut p = Picker {
        rw_random: false,
        read_percent: 100,
        sizes: BlockSizes::Fixed(8192),
        unit: 4096,
        start: 1 << 20,
        blocks: 5,
        next_block: 0,
        map: None,
        rng: Rng::new(1),
    };
    let offsets: Vec<u64> = (0..4).map(|_| p.next().1 - (1 << 20)).collect();
    assert_eq!(offsets, [0, 8192, 0, 8192], "an I/O that would run past the end starts over");
    p.rw_random = true;
    p.sizes = BlockSizes::Range { min: 4096, max: 16384 };
    for _ in 0..1000 {
        let (_, off, len) = p.next();
        assert!(off >= 1 << 20 && off + len <= (1 << 20) + 5 * 4096 && len % 4096 == 0 && len > 0);
    }
}

#[test]
fn latency_buckets_are_fios() {
    let cases = [
        (0, 0),
        (1, 0),
        (2, 1),
        (999, 9),
        (1_000, 10),
        (1_999, 10),
        (2_000, 11),
        (249_999, 16),
        (250_000, 17),
        (999_999, 19),
        (1_000_000, 20),
        (749_000_000, 28),
        (499_999_999, 27),
        (999_999_999, 29),
        (1_000_000_000, 30),
        (1_999_999_999, 30),
        (2_000_000_000, 31),
    ];
    for (ns, want) in cases {
        assert_eq!(lat_level(ns), want, "{ns} ns");
    }
    let counts: Vec<usize> = [0, 1, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65].into_iter().map(count_bucket).collect();
    assert_eq!(counts, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
}
