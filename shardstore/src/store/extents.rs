//! The extent table: each extent's generation, write pointer, live
//! blocks and verification time, the open extent, and the classes (free,
//! emptied, reclamation's candidates, by verification time) kept up to
//! date as extents change; allocation of space for new records.

use super::Locator;

/// Extents by class: free (nothing written, not open), emptied (sealed,
/// written, nothing live: reset by the next commit), reclamation's
/// candidates (sealed, written, with a reset giving back at least a
/// quarter of an extent), by the blocks a reset gives back, and the
/// extents holding live blocks by their verification time (the scrub
/// status's oldest, without a walk of the table).
#[derive(Debug, Default)]
struct ExtentClasses {
    free: std::collections::BTreeSet<u32>,
    emptied: std::collections::BTreeSet<u32>,
    /// (blocks a reset gives back, extent): the emptiest last.
    candidates: std::collections::BTreeSet<(u32, u32)>,
    /// The blocks each extent is filed under among the candidates.
    filed: Vec<Option<u32>>,
    /// (verification time, extent) of every extent with live blocks: the
    /// least verified first.
    verified: std::collections::BTreeSet<(u64, u32)>,
    /// The time each extent is filed under in `verified`.
    verified_at: Vec<Option<u64>>,
}

impl ExtentClasses {
    fn new(extents: usize) -> ExtentClasses {
        ExtentClasses { filed: vec![None; extents], verified_at: vec![None; extents], ..ExtentClasses::default() }
    }

    fn rebuild(&mut self, extents: &[ExtentInfo], open: Option<u32>, blocks_per_extent: u32) {
        *self = ExtentClasses::new(extents.len());
        for (i, e) in extents.iter().enumerate() {
            self.touch(i as u32, e, open, blocks_per_extent);
        }
    }

    fn touch(&mut self, i: u32, e: &ExtentInfo, open: Option<u32>, blocks_per_extent: u32) {
        let sealed = open != Some(i);
        let (free, emptied) = (sealed && e.write_blocks == 0, sealed && e.write_blocks > 0 && e.live_blocks == 0);
        if free {
            self.free.insert(i);
        } else {
            self.free.remove(&i);
        }
        if emptied {
            self.emptied.insert(i);
        } else {
            self.emptied.remove(&i);
        }
        // A reset gives back the whole extent: its dead blocks and what was
        // never written alike (older builds sealed the open extent at
        // every open, its rest unwritten).
        let regained = blocks_per_extent - e.live_blocks;
        let candidate = (sealed && e.write_blocks > 0 && regained * 4 >= blocks_per_extent).then_some(regained);
        refile(&mut self.candidates, &mut self.filed[i as usize], i, candidate);
        let checked = (e.live_blocks > 0 && e.checked_ms > 0).then_some(e.checked_ms);
        refile(&mut self.verified, &mut self.verified_at[i as usize], i, checked);
    }
}

/// Files extent `i` in `set` under `key` (out of it when `None`), where it
/// was under `*filed`, which then holds `key`.
fn refile<K: Ord + Copy>(
    set: &mut std::collections::BTreeSet<(K, u32)>,
    filed: &mut Option<K>,
    i: u32,
    key: Option<K>,
) {
    if *filed != key {
        if let Some(was) = filed.take() {
            set.remove(&(was, i));
        }
        if let Some(k) = key {
            set.insert((k, i));
        }
        *filed = key;
    }
}

/// Sums of a per-extent count over any run of extents from the first,
/// kept as the counts change (a Fenwick tree): the scrubber asks for the
/// live bytes past its cursor at every step, and a 16 TB drive has a
/// quarter of a million extents to sum.
#[derive(Debug, Default)]
struct PrefixSums {
    /// `tree[i]` (from 1) holds the sum of the `i & i.wrapping_neg()`
    /// counts ending at count `i - 1`.
    tree: Vec<u64>,
}

impl PrefixSums {
    fn new(counts: impl ExactSizeIterator<Item = u64>) -> PrefixSums {
        let mut tree = vec![0u64; counts.len() + 1];
        for (i, c) in counts.enumerate() {
            let j = i + 1;
            tree[j] = tree[j].wrapping_add(c);
            let parent = j + (j & j.wrapping_neg());
            if parent < tree.len() {
                tree[parent] = tree[parent].wrapping_add(tree[j]);
            }
        }
        PrefixSums { tree }
    }

    /// The sums of each extent's live blocks.
    fn of_live(extents: &[ExtentInfo]) -> PrefixSums {
        PrefixSums::new(extents.iter().map(|e| u64::from(e.live_blocks)))
    }

    /// Count `i` grows by `delta` (shrinks, for a negative one).
    fn add(&mut self, i: u32, delta: i64) {
        let mut j = i as usize + 1;
        while j < self.tree.len() {
            // Two's complement: the sums come out right as long as every
            // true sum is not negative, which the counts guarantee.
            self.tree[j] = self.tree[j].wrapping_add(delta as u64);
            j += j & j.wrapping_neg();
        }
    }

    /// The sum of counts `0..i`.
    fn below(&self, i: u32) -> u64 {
        let (mut j, mut sum) = (i as usize, 0u64);
        while j > 0 {
            sum = sum.wrapping_add(self.tree[j]);
            j -= j & j.wrapping_neg();
        }
        sum
    }
}

/// One extent's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtentInfo {
    pub generation: u32,
    /// Write pointer in blocks: everything below it was written this
    /// generation.
    pub write_blocks: u32,
    /// Blocks of records the index still references.
    pub live_blocks: u32,
    /// Every live byte in the extent was known good (verified by the
    /// scrubber, or written) at or after this time; 0 while it holds
    /// nothing. Writes lower it to their time only when it is 0, so it is
    /// never later than the truth.
    pub checked_ms: u64,
}

impl ExtentInfo {
    /// A record written at `written_ms` landed here.
    fn note_write(&mut self, written_ms: u64) {
        if self.checked_ms == 0 {
            self.checked_ms = written_ms.max(1);
        }
    }
}

/// The extent table, the one owner of every extent's state: the
/// generation, write pointer, live blocks and verification time of each,
/// which one is open for appends, and the classes kept as they change.
#[derive(Debug)]
pub(super) struct ExtentTable {
    extents: Vec<ExtentInfo>,
    open: Option<u32>,
    /// Free extents and sealed ones with nothing live, kept up to date as
    /// extents change, so a commit never walks the table.
    classes: ExtentClasses,
    blocks_per_extent: u32,
    /// The sum of every extent's `live_blocks`, kept as they change: the
    /// store's usage is published after most commits, and a 16 TB drive
    /// has a quarter of a million extents to sum.
    live_total: u64,
    /// Every extent's `live_blocks`, summable from any extent on.
    live_sums: PrefixSums,
    /// Live chunks (records the index references) in each extent: how the
    /// scrubber sizes the run of extents one walk of the index lists.
    live_chunks: Vec<u32>,
}

impl ExtentTable {
    /// The table as a checkpoint left it (no live blocks counted yet, no
    /// extent open); [`ExtentTable::recovered`] files the classes once
    /// recovery has replayed everything.
    pub(super) fn new(extents: Vec<ExtentInfo>, blocks_per_extent: u32) -> ExtentTable {
        assert!(
            extents.iter().all(|e| e.write_blocks <= blocks_per_extent),
            "write pointers are checked against the extent size before the table is built"
        );
        let live_total = extents.iter().map(|e| u64::from(e.live_blocks)).sum();
        let live_sums = PrefixSums::of_live(&extents);
        let live_chunks = vec![0; extents.len()];
        let classes = ExtentClasses::new(extents.len());
        ExtentTable { extents, open: None, classes, blocks_per_extent, live_total, live_sums, live_chunks }
    }

    /// Recovery replayed everything: appends go on in the extent that was
    /// open (`reopen`), the classes are filed, and the sums the
    /// checkpoint's shards were loaded without (`load_live`) built.
    pub(super) fn recovered(&mut self) {
        self.open = self.reopen();
        self.classes.rebuild(&self.extents, self.open, self.blocks_per_extent);
        self.live_sums = PrefixSums::of_live(&self.extents);
    }

    /// The extent appends go on in after an open: the one written part of
    /// the way with live blocks in it and the most room left (the one open
    /// when the store last ran, unless an older build, which sealed it at
    /// every open, left others so). Sealing it instead would leave its rest
    /// unwritten until reclamation moved its live chunks to get it back.
    /// Appending past its write pointer is what the open extent always
    /// does: whatever lies there (a record written but never logged) is
    /// referenced by nothing. One with nothing live is left sealed, for
    /// the next commit to reset whole.
    fn reopen(&self) -> Option<u32> {
        let per = self.blocks_per_extent;
        let partial = |(_, e): &(usize, &ExtentInfo)| e.write_blocks > 0 && e.write_blocks < per && e.live_blocks > 0;
        let (i, _) = self.extents.iter().enumerate().filter(partial).min_by_key(|(_, e)| e.write_blocks)?;
        Some(i as u32)
    }

    pub(super) fn all(&self) -> &[ExtentInfo] {
        &self.extents
    }

    pub(super) fn get(&self, extent: u32) -> ExtentInfo {
        self.extents[extent as usize]
    }

    pub(super) fn len(&self) -> usize {
        self.extents.len()
    }

    pub(super) fn blocks_per_extent(&self) -> u32 {
        self.blocks_per_extent
    }

    pub(super) fn free_count(&self) -> u32 {
        self.classes.free.len() as u32
    }

    /// Sealed extents with nothing live: the next commit resets them.
    pub(super) fn emptied(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes.emptied.iter().copied()
    }

    /// Files extent `i` under its class after it (or the open extent) changed.
    fn touch(&mut self, i: u32) {
        self.classes.touch(i, &self.extents[i as usize], self.open, self.blocks_per_extent);
    }

    /// Where `allocate` would put a record of `blocks` if the open extent
    /// has room for it (nothing is allocated).
    pub(super) fn next_in_open(&self, blocks: u32) -> Option<Locator> {
        let e = self.open?;
        let info = &self.extents[e as usize];
        (info.write_blocks + blocks <= self.blocks_per_extent).then_some(Locator::lone(e, info.write_blocks, 0))
    }

    /// Space for one record of `blocks`: appended to the open extent, or at
    /// the start of a free one while more than `reserve` are free.
    pub(super) fn allocate(&mut self, blocks: u32, reserve: u32) -> Option<Locator> {
        let per = self.blocks_per_extent;
        assert!(blocks <= per, "a record of {blocks} blocks cannot fit a {per}-block extent");
        if let Some(e) = self.open {
            let info = &mut self.extents[e as usize];
            if info.write_blocks + blocks <= per {
                let block = info.write_blocks;
                info.write_blocks += blocks;
                return Some(Locator::lone(e, block, 0));
            }
        }
        if self.free_count() <= reserve {
            return None;
        }
        let e = *self.classes.free.first()?;
        let sealed = self.open.replace(e);
        self.extents[e as usize].write_blocks = blocks;
        self.touch(e);
        if let Some(sealed) = sealed {
            self.touch(sealed);
        }
        Some(Locator::lone(e, 0, 0))
    }

    /// Space for a put's record: as `allocate`, keeping the reclamation
    /// reserve back.
    pub(super) fn allocate_put(&mut self, blocks: u32) -> Option<Locator> {
        self.allocate(blocks, super::RESERVE_EXTENTS_COUNT)
    }

    /// A record of `blocks` written at `written_ms` is live at `at` (a put,
    /// or a relocation's copy, applied once durable).
    pub(super) fn add_live(&mut self, at: Locator, span: u32, live: u32, written_ms: u64) {
        let e = &mut self.extents[at.extent as usize];
        e.write_blocks = e.write_blocks.max(at.block + span);
        assert!(e.write_blocks <= self.blocks_per_extent, "extent {} written past its end", at.extent);
        e.live_blocks += live;
        e.note_write(written_ms);
        self.live_total += u64::from(live);
        self.live_sums.add(at.extent, i64::from(live));
        self.live_chunks[at.extent as usize] += 1;
        self.touch(at.extent);
    }

    /// A checkpoint's shard is live in `extent` (its write pointer comes
    /// from the checkpoint). A version 1 checkpoint has no verification
    /// times: the oldest write time in the extent stands in. The sums are
    /// built once, by [`ExtentTable::recovered`].
    pub(super) fn load_live(&mut self, extent: u32, blocks: u32, written_ms: u64, version: u32) {
        let e = &mut self.extents[extent as usize];
        e.live_blocks += blocks;
        self.live_total += u64::from(blocks);
        self.live_chunks[extent as usize] += 1;
        if version < 2 && e.checked_ms != 0 {
            e.checked_ms = e.checked_ms.min(written_ms.max(1));
        } else {
            e.note_write(written_ms);
        }
    }

    /// A record of `blocks` in `extent` is no longer referenced.
    pub(super) fn release(&mut self, extent: u32, blocks: u32) {
        let e = &mut self.extents[extent as usize];
        e.live_blocks =
            e.live_blocks.checked_sub(blocks).unwrap_or_else(|| panic!("extent {extent} live accounting underflow"));
        self.live_total -= u64::from(blocks);
        self.live_sums.add(extent, -i64::from(blocks));
        self.live_chunks[extent as usize] -= 1;
        self.touch(extent);
    }

    /// The extent was emptied: its generation moves on, nothing is in it.
    pub(super) fn reset(&mut self, extent: u32, generation: u32) {
        let live = self.extents[extent as usize].live_blocks;
        self.live_total -= u64::from(live);
        self.live_sums.add(extent, -i64::from(live));
        self.live_chunks[extent as usize] = 0;
        self.extents[extent as usize] = ExtentInfo { generation, write_blocks: 0, live_blocks: 0, checked_ms: 0 };
        if self.open == Some(extent) {
            self.open = None;
        }
        self.touch(extent);
    }

    /// The scrubber verified every live chunk of `extent` (of `generation`)
    /// written before `checked_ms`; anything written since is newer.
    pub(super) fn scrubbed(&mut self, extent: u32, generation: u32, checked_ms: u64) {
        let e = &mut self.extents[extent as usize];
        if e.generation == generation && e.checked_ms != 0 {
            e.checked_ms = e.checked_ms.max(checked_ms);
            self.touch(extent);
        }
    }

    /// The earliest verification time of an extent holding live blocks.
    pub(super) fn oldest_checked(&self) -> Option<u64> {
        self.classes.verified.first().map(|&(t, _)| t)
    }

    /// Blocks of records the index references, in all.
    pub(super) fn live_blocks(&self) -> u64 {
        self.live_total
    }

    /// Blocks of live records in extents `first..`.
    pub(super) fn live_blocks_from(&self, first: u32) -> u64 {
        self.live_total - self.live_sums.below(first)
    }

    /// Live chunks in `extent`.
    pub(super) fn live_chunks(&self, extent: u32) -> u32 {
        self.live_chunks[extent as usize]
    }

    /// Blocks left in the open extent.
    pub(super) fn open_blocks_left(&self) -> u32 {
        self.open.map_or(0, |e| self.blocks_per_extent - self.extents[e as usize].write_blocks)
    }

    /// The sealed extent whose reset gives back the most (the fewest live
    /// blocks), if at least a quarter of an extent, other than `stuck` (an
    /// extent whose evacuation failed, as it was then: extent, generation,
    /// live). Of those equally live, the last. Not the most dead blocks:
    /// an extent sealed part of the way (by an older build at an open)
    /// may hold few blocks, all of them live, and its unwritten rest is
    /// space too. Taken from the candidates kept as extents change: a
    /// commit on a full drive with nothing to reclaim would otherwise walk
    /// the table every time.
    pub(super) fn victim(&self, stuck: Option<(u32, u32, u32)>) -> Option<u32> {
        self.candidates().find(|&i| {
            let e = &self.extents[i as usize];
            stuck != Some((i, e.generation, e.live_blocks))
        })
    }

    /// Sealed extents a reset would give at least a quarter of back, the
    /// fewest live blocks first (of those equally live, the last first).
    pub(super) fn candidates(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes.candidates.iter().rev().map(|&(_, i)| i)
    }

    /// Checks the table against the live blocks and chunks the index
    /// references per extent; panics on a broken invariant.
    pub(super) fn check(&self, live: &[u32], chunks: &[u32]) {
        let mut below = 0;
        for (i, e) in self.extents.iter().enumerate() {
            assert_eq!(e.live_blocks, live[i], "extent {i} live blocks");
            assert_eq!(self.live_chunks[i], chunks[i], "extent {i} live chunks");
            assert_eq!(self.live_sums.below(i as u32), below, "live blocks of the extents before {i}, as summed");
            below += u64::from(e.live_blocks);
            assert!(e.write_blocks <= self.blocks_per_extent, "extent {i} write pointer past its end");
        }
        let sum: u64 = self.extents.iter().map(|e| u64::from(e.live_blocks)).sum();
        assert_eq!(self.live_total, sum, "live blocks kept as they changed differ from the table's sum");
        let mut recomputed = ExtentClasses::default();
        recomputed.rebuild(&self.extents, self.open, self.blocks_per_extent);
        assert!(recomputed.free == self.classes.free, "free extents kept as they changed differ from the table");
        assert!(
            recomputed.emptied == self.classes.emptied,
            "emptied extents kept as they changed differ from the table"
        );
        assert!(
            recomputed.candidates == self.classes.candidates && recomputed.filed == self.classes.filed,
            "reclamation's candidates kept as they changed differ from the table"
        );
        assert!(
            recomputed.verified == self.classes.verified && recomputed.verified_at == self.classes.verified_at,
            "extents by verification time kept as they changed differ from the table"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{ExtentInfo, ExtentTable};

    fn extent(write_blocks: u32, live_blocks: u32) -> ExtentInfo {
        ExtentInfo { generation: 1, write_blocks, live_blocks, checked_ms: 1 }
    }

    /// After an open, appends go on in the extent written part of the way
    /// with the most room left; of the sealed ones, the victim is the one
    /// whose reset gives back the most (the fewest live blocks), even when
    /// all it holds is live: an extent an older build sealed at 30% (70
    /// blocks back) before one 40% dead (40 back). Chosen by dead blocks,
    /// the partial extent was not even a candidate.
    #[test]
    fn appends_resume_in_the_open_extent_and_the_victim_is_the_least_live() {
        let mut table = ExtentTable::new(vec![extent(100, 60), extent(10, 10), extent(30, 30), extent(0, 0)], 100);
        table.recovered();
        assert_eq!(table.open, Some(1), "the partial extent with the most room left is open again");
        assert_eq!(table.candidates().collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(table.victim(None), Some(2));
        assert_eq!(table.victim(Some((2, 1, 30))), Some(0), "a stuck extent is passed over");
        assert_eq!(table.free_count(), 1);
        assert_eq!(table.allocate(5, 0).map(|l| (l.extent, l.block)), Some((1, 10)), "appended where it stopped");
    }

    /// A reset must give back at least a quarter of an extent: full
    /// extents a fifth and 24% dead are left alone; a partial extent with
    /// nothing live is not reopened (the one with live blocks is) but
    /// emptied, for the next commit to reset whole.
    #[test]
    fn a_victim_gives_back_a_quarter_of_an_extent_and_an_empty_one_is_reset() {
        let extents = vec![extent(100, 80), extent(100, 76), extent(80, 80), extent(40, 0), extent(0, 0)];
        let mut table = ExtentTable::new(extents, 100);
        table.recovered();
        assert_eq!(table.open, Some(2));
        assert_eq!(table.emptied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(table.candidates().collect::<Vec<_>>(), vec![3], "only the empty extent gives back a quarter");
    }
}
