//! The erasure coding benchmark (issue 13): our object encode and decode
//! (`shardnode_cluster::ec`: stripes of k cells, padding, shard buffers)
//! against `reed-solomon-simd` used directly the way its own benchmark
//! does (k original shards of one cell, encoded in one call), on the same
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
    let stripes = geometry.stripes() as usize;
    println!(
        "# Erasure coding, {k}+{m}, {mib} MiB objects ({stripes} stripes of {k} x {} KiB cells), one core\n",
        cell >> 10
    );

    let (mut enc_ours, mut enc_raw, mut dec_ours, mut dec_raw) = (vec![], vec![], vec![], vec![]);
    let mut encoder = ReedSolomonEncoder::new(k, m, cell).unwrap();
    let shards = ec::encode(&geometry, &object).unwrap();
    for round in 0..rounds {
        // Raw: the crate encoding each stripe's k cells straight from the
        // object, as its benchmark encodes k shards.
        let raw_encode = |encoder: &mut ReedSolomonEncoder| {
            let t = Instant::now();
            let mut parity_bytes = 0;
            for s in 0..stripes {
                for i in 0..k {
                    let at = (s * k + i) * cell;
                    encoder.add_original_shard(&object[at..at + cell]).unwrap();
                }
                let r = encoder.encode().unwrap();
                parity_bytes += r.recovery_iter().map(<[u8]>::len).sum::<usize>();
            }
            assert_eq!(parity_bytes, stripes * m * cell);
            t.elapsed().as_secs_f64()
        };
        let ours_encode = || {
            let t = Instant::now();
            let s = ec::encode(&geometry, &object).unwrap();
            assert_eq!(s.len(), k + m);
            t.elapsed().as_secs_f64()
        };
        // Decode with the first two data shards lost.
        let lost = m.min(k);
        let raw_decode = || {
            let mut decoder = ReedSolomonDecoder::new(k, m, cell).unwrap();
            let t = Instant::now();
            for s in 0..stripes {
                let at = s * cell;
                for (i, shard) in shards.iter().enumerate().take(k).skip(lost) {
                    decoder.add_original_shard(i, &shard[at..at + cell]).unwrap();
                }
                for (j, shard) in shards[k..].iter().enumerate().take(lost) {
                    decoder.add_recovery_shard(j, &shard[at..at + cell]).unwrap();
                }
                let r = decoder.decode().unwrap();
                assert_eq!(r.restored_original_iter().count(), lost);
            }
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
            let re = raw_encode(&mut encoder);
            let oe = ours_encode();
            let rd = raw_decode();
            (re, oe, rd, ours_decode())
        } else {
            let oe = ours_encode();
            let re = raw_encode(&mut encoder);
            let od = ours_decode();
            (re, oe, raw_decode(), od)
        };
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
        "| decode ({} data shards lost) | {:.2} GiB/s | {:.2} GiB/s | **{:.2}** |",
        m.min(k),
        median(dec_raw.clone()),
        median(dec_ours.clone()),
        ratio(&dec_ours, &dec_raw)
    );
    println!("\nGiB/s of object bytes; {rounds} rounds, order alternating. The crate's side encodes and decodes the object's cells in place; ours also builds the k + m shard buffers (encode) and the object (decode).");
}
