//! The erasure coding benchmark (issue 13): our object encode and decode
//! (`shardnode_cluster::ec`: k contiguous data shards, 64 KiB slices)
//! against `reed-solomon-simd` used directly the way its own benchmark
//! does (the k original shards in one call), on the same
//! data in the same run, alternating, medians of paired ratios.
//!
//! usage: cargo run --release -p shardnode-cluster --example ec_bench --
//!            [--k 4] [--m 2] [--mib 64] [--rounds 7]

use std::time::Instant;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use shardnode_cluster::ec::{self, Geometry};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    }
}

fn gib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1u64 << 30) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (k, m, mib, rounds) = (arg("--k", 4), arg("--m", 2), arg("--mib", 64), arg("--rounds", 7));
    let size = mib << 20;
    let object: Vec<u8> = (0..size).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    let geometry = Geometry::for_object(size as u64, k, m);
    let cell = geometry.cell as usize;
    println!("# Erasure coding, {k}+{m}, {mib} MiB objects ({k} data shards of {} KiB), one core\n", cell >> 10);

    let (mut enc_ours, mut enc_raw, mut dec_ours, mut dec_raw) = (vec![], vec![], vec![], vec![]);
    let mut full = vec![];
    let mut parity: Vec<Vec<u8>> = vec![Vec::new(); m];
    let mut encoder = ReedSolomonEncoder::new(k, m, cell).unwrap();
    let shards = ec::encode(&geometry, &object).unwrap();
    let lost = m.min(k);
    for round in 0..rounds {
        // The crate used directly: the object's k shards in one call.
        let mut raw_encode = || {
            let t = Instant::now();
            for i in 0..k {
                encoder.add_original_shard(&object[i * cell..(i + 1) * cell]).unwrap();
            }
            let r = encoder.encode().unwrap();
            assert_eq!(r.recovery_iter().count(), m);
            t.elapsed().as_secs_f64()
        };
        let mut ours_encode = || {
            let t = Instant::now();
            ec::parity_into(&geometry, &object, &mut parity).unwrap();
            t.elapsed().as_secs_f64()
        };
        let raw_decode = || {
            let mut decoder = ReedSolomonDecoder::new(k, m, cell).unwrap();
            let t = Instant::now();
            for (i, shard) in shards.iter().enumerate().take(k).skip(lost) {
                decoder.add_original_shard(i, shard).unwrap();
            }
            for (j, shard) in shards[k..].iter().enumerate().take(lost) {
                decoder.add_recovery_shard(j, shard).unwrap();
            }
            let r = decoder.decode().unwrap();
            assert_eq!(r.restored_original_iter().count(), lost);
            t.elapsed().as_secs_f64()
        };
        let ours_decode = || {
            let avail: Vec<Option<&[u8]>> = (0..k + m).map(|i| (i >= lost).then(|| shards[i].as_slice())).collect();
            let t = Instant::now();
            let o = ec::decode(&geometry, &avail).unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(o == object);
            secs
        };
        let (re, oe, rd, od) = if round % 2 == 0 {
            let re = raw_encode();
            let oe = ours_encode();
            let rd = raw_decode();
            (re, oe, rd, ours_decode())
        } else {
            let oe = ours_encode();
            let re = raw_encode();
            let od = ours_decode();
            (re, oe, raw_decode(), od)
        };
        let t = Instant::now();
        let all = ec::encode(&geometry, &object).unwrap();
        full.push(gib_s(size, t.elapsed().as_secs_f64()));
        assert_eq!(all.len(), k + m);
        enc_raw.push(gib_s(size, re));
        enc_ours.push(gib_s(size, oe));
        dec_raw.push(gib_s(size, rd));
        dec_ours.push(gib_s(size, od));
    }
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    println!("| operation | reed-solomon-simd directly | shardnode ec | median of paired ratios |");
    println!("|---|---:|---:|---:|");
    println!(
        "| encode | {:.2} GiB/s | {:.2} GiB/s | **{:.2}** |",
        median(enc_raw.clone()),
        median(enc_ours.clone()),
        ratio(&enc_ours, &enc_raw)
    );
    println!(
        "| encode into new shard buffers (data copied) | | {:.2} GiB/s | {:.2} |",
        median(full.clone()),
        ratio(&full, &enc_raw)
    );
    println!(
        "| decode ({} data shards lost) | {:.2} GiB/s | {:.2} GiB/s | **{:.2}** |",
        m.min(k),
        median(dec_raw.clone()),
        median(dec_ours.clone()),
        ratio(&dec_ours, &dec_raw)
    );
    println!("\nGiB/s of object bytes; {rounds} rounds, order alternating. Encode: parity from the object's own bytes into reused buffers (ours: 64 KiB slices) against the crate given the k shards in one call. Decode: ours returns the whole object (lost shards restored in slices, the rest copied); the crate restores the lost shards only.");
}
