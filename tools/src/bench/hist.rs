//! Latency statistics with fio's log-linear histogram (`plat`): 64 buckets
//! per power of two, so any reported percentile is within about 1.6% of
//! the true value, in fixed memory, mergeable across jobs by adding
//! buckets. Bucket math mirrors fio's `plat_val_to_idx`/`plat_idx_to_val`,
//! so our percentiles and fio's are computed the same way.

const PLAT_BITS: u32 = 6;
const PLAT_VAL: u64 = 1 << PLAT_BITS;
const PLAT_GROUP_NR: usize = 29;
pub const PLAT_NR: usize = PLAT_GROUP_NR * PLAT_VAL as usize;

/// fio's default `percentile_list`.
pub const DEFAULT_PERCENTILES: [f64; 17] =
    [1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99];

/// Samples in nanoseconds: min, max, mean, standard deviation, histogram.
#[derive(Clone)]
pub struct LatencyStats {
    pub count: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    sum_ns: f64,
    sum_sq_ns: f64,
    buckets: Box<[u64; PLAT_NR]>,
}

impl std::fmt::Debug for LatencyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyStats")
            .field("count", &self.count)
            .field("mean_ns", &self.mean())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0.0,
            sum_sq_ns: 0.0,
            buckets: Box::new([0; PLAT_NR]),
        }
    }
}

fn val_to_idx(val: u64) -> usize {
    let msb = if val == 0 { 0 } else { val.ilog2() };
    if msb <= PLAT_BITS {
        return val as usize;
    }
    let error_bits = msb - PLAT_BITS;
    let base = ((error_bits + 1) as usize) << PLAT_BITS;
    let offset = ((PLAT_VAL - 1) & (val >> error_bits)) as usize;
    (base + offset).min(PLAT_NR - 1)
}

fn idx_to_val(idx: usize) -> u64 {
    assert!(idx < PLAT_NR);
    if idx < (PLAT_VAL << 1) as usize {
        return idx as u64;
    }
    let error_bits = (idx >> PLAT_BITS) as u32 - 1;
    let base = 1u64 << (error_bits + PLAT_BITS);
    let k = (idx as u64) % PLAT_VAL;
    // The bucket's midpoint, as fio reports it.
    base + ((k as f64 + 0.5) * (1u64 << error_bits) as f64) as u64
}

impl LatencyStats {
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        let v = ns as f64;
        self.sum_ns += v;
        self.sum_sq_ns += v * v;
        self.buckets[val_to_idx(ns)] += 1;
    }

    pub fn merge(&mut self, other: &LatencyStats) {
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
        self.sum_sq_ns += other.sum_sq_ns;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns / self.count as f64
        }
    }

    /// Sample standard deviation, as fio reports it.
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let var = (self.sum_sq_ns - self.sum_ns * self.sum_ns / n) / (n - 1.0);
        var.max(0.0).sqrt()
    }

    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_ns
        }
    }

    /// The non-empty histogram buckets as (midpoint ns, samples): fio's
    /// `json+` "bins", from which any percentile can be recomputed and
    /// histograms of several runs merged.
    pub fn bins(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().enumerate().filter(|(_, &n)| n > 0).map(|(idx, &n)| (idx_to_val(idx), n))
    }

    /// fio's `calc_clat_percentiles`: the first bucket whose cumulative
    /// count reaches `p`% of the samples, reported as its midpoint.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = (p / 100.0 * self.count as f64).max(1.0);
        let mut seen = 0u64;
        for (idx, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen as f64 >= target {
                return idx_to_val(idx);
            }
        }
        idx_to_val(PLAT_NR - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_midpoints_are_within_two_percent() {
        for v in [1u64, 63, 64, 127, 128, 1000, 4096, 99_999, 1_234_567, 10_000_000_000] {
            let back = idx_to_val(val_to_idx(v));
            let err = (back as f64 - v as f64).abs() / v as f64;
            assert!(err <= 0.016, "{v} -> {back}: error {err}");
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut s = LatencyStats::default();
        for v in 1..=100_000u64 {
            s.record(v * 10);
        }
        for p in [1.0, 50.0, 90.0, 99.0, 99.9] {
            let want = p / 100.0 * 1_000_000.0;
            let got = s.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.02, "p{p}: got {got}, want {want}");
        }
        assert_eq!(s.min(), 10);
        assert_eq!(s.max_ns, 1_000_000);
        assert!((s.mean() - 500_005.0).abs() < 1.0);
        // Standard deviation of a uniform distribution: range / sqrt(12).
        assert!((s.stddev() - 288_675.0).abs() / 288_675.0 < 0.001, "{}", s.stddev());
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_samples() {
        let (mut a, mut b, mut all) = (LatencyStats::default(), LatencyStats::default(), LatencyStats::default());
        for v in 0..5000u64 {
            let x = v * v % 77_777 + 100;
            if v % 3 == 0 {
                a.record(x);
            } else {
                b.record(x);
            }
            all.record(x);
        }
        a.merge(&b);
        for p in DEFAULT_PERCENTILES {
            assert_eq!(a.percentile(p), all.percentile(p));
        }
        assert_eq!((a.count, a.min(), a.max_ns), (all.count, all.min(), all.max_ns));
    }

    #[test]
    fn a_bimodal_tail_shows_in_p99() {
        let mut s = LatencyStats::default();
        for _ in 0..980 {
            s.record(100_000);
        }
        for _ in 0..20 {
            s.record(10_000_000);
        }
        assert!(s.percentile(50.0).abs_diff(100_000) < 2_000);
        assert!(s.percentile(99.0).abs_diff(10_000_000) < 200_000);
    }
}
