//! Vault sealing and opening of 1 KiB values against raw `ring` AES-256-GCM
//! in the same run (goal: the vault at ≥ 50 % of raw throughput).
//!
//! Run: `cargo bench --bench vault`. Prints the ratio after criterion's table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use coffre::crypto::{DataKey, KeySet, SealContext};
use criterion::{Criterion, Throughput, criterion_group};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const SIZE: usize = 1024;

fn raw_key() -> LessSafeKey {
    let mut k = [0u8; 32];
    SystemRandom::new().fill(&mut k).unwrap();
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).unwrap())
}

/// Raw ring: fresh random nonce, seal in place, nonce prepended (the same
/// output shape the vault produces, without its context binding).
fn raw_seal(key: &LessSafeKey, rng: &SystemRandom, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce).unwrap();
    let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"ctx"),
            &mut out[12..],
        )
        .unwrap();
    out.extend_from_slice(tag.as_ref());
    out
}

fn raw_open(key: &LessSafeKey, sealed: &[u8]) -> Vec<u8> {
    let nonce: [u8; 12] = sealed[..12].try_into().unwrap();
    let mut buf = sealed[12..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"ctx"),
            &mut buf,
        )
        .unwrap();
    plain.to_vec()
}

const CTX: SealContext<'static> = SealContext {
    resident_id: "0b9a3c1e-5d6f-4a7b-8c9d-000000000001",
    category: "contact",
    record_id: "5f0c2d7e-7a43-4c8e-9a0b-1b2c3d4e5f60",
    version: 3,
    provenance: None,
};

fn bench(c: &mut Criterion) {
    let value = vec![0x5au8; SIZE];
    let rng = SystemRandom::new();
    let key = raw_key();
    let dk = DataKey::generate().unwrap();
    let sealer = dk.sealer().unwrap();
    let set = KeySet::generate_in_memory().unwrap();
    let wrapped = set.wrap_data_key(CTX.resident_id, &dk).unwrap();

    let mut g = c.benchmark_group("seal+open 1 KiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("raw ring", |b| {
        b.iter(|| raw_open(&key, &raw_seal(&key, &rng, &value)))
    });
    g.bench_function("vault (sealer kept)", |b| {
        b.iter(|| {
            sealer
                .open(&CTX, &sealer.seal(&CTX, &value).unwrap())
                .unwrap()
        })
    });
    g.bench_function("vault (data key unwrapped per value)", |b| {
        b.iter(|| {
            let dk = set.unwrap_data_key(CTX.resident_id, &wrapped).unwrap();
            let s = dk.sealer().unwrap();
            s.open(&CTX, &s.seal(&CTX, &value).unwrap()).unwrap()
        })
    });
    g.finish();
}

/// Interleaved timing of the same three paths, to print ratios.
fn ratios() {
    let value = vec![0x5au8; SIZE];
    let rng = SystemRandom::new();
    let key = raw_key();
    let dk = DataKey::generate().unwrap();
    let sealer = dk.sealer().unwrap();
    let set = KeySet::generate_in_memory().unwrap();
    let wrapped = set.wrap_data_key(CTX.resident_id, &dk).unwrap();
    let rounds = 20;
    let per_round = 20_000;
    let (mut raw, mut vault, mut unwrap_each) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(raw_open(&key, &raw_seal(&key, &rng, &value)));
        }
        raw += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(
                sealer
                    .open(&CTX, &sealer.seal(&CTX, &value).unwrap())
                    .unwrap(),
            );
        }
        vault += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_round / 4 {
            let dk = set.unwrap_data_key(CTX.resident_id, &wrapped).unwrap();
            let s = dk.sealer().unwrap();
            std::hint::black_box(s.open(&CTX, &s.seal(&CTX, &value).unwrap()).unwrap());
        }
        unwrap_each += t.elapsed() * 4;
    }
    let n = (rounds * per_round) as f64;
    let rate = |d: Duration| n / d.as_secs_f64();
    println!("\nseal+open of 1 KiB values, same run, {} values each:", n);
    println!(
        "  raw ring AES-256-GCM:                 {:>9.0} values/s",
        rate(raw)
    );
    println!(
        "  vault, sealer kept per resident:      {:>9.0} values/s  ratio {:.2} (goal >= 0.50: {})",
        rate(vault),
        rate(vault) / rate(raw),
        if rate(vault) / rate(raw) >= 0.5 {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!(
        "  vault, data key unwrapped per value:  {:>9.0} values/s  ratio {:.2}",
        rate(unwrap_each),
        rate(unwrap_each) / rate(raw)
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
