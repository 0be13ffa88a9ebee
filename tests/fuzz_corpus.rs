//! The driver against a device that lies about every word it reports (`ttdrv_testkit::lying`, the model behind the
//! fuzz target `fuzz/fuzz_targets/device_words.rs`), in the ordinary test run:
//!
//! - an honest script: the model implements the contract faithfully, so every call succeeds and every read returns
//!   what was written (this keeps the model itself honest, so the fuzzer's findings are the driver's);
//! - the committed seed corpus (`fuzz/corpus/device_words/`) and a few hundred generated lying scripts replayed: no
//!   panic, every error of an allowed kind, every successful read correct, close OK.
//!
//! `scripts/fuzz.sh` (or `cargo fuzz run device_words`) runs the same model under libFuzzer's coverage guidance.

use ttdrv_testkit::lying::run;

/// Deterministic bytes: xorshift64 from `seed`.
fn bytes(seed: u64, n: usize, map: impl Fn(u8) -> u8) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            map(x as u8)
        })
        .collect()
}

#[test]
fn an_honest_script_succeeds_and_reads_back_what_was_written() {
    for seed in 1..=20 {
        // Every byte below 0xE0: every reported value is the truth, and no queue hangs.
        let s = run(&bytes(seed, 3000, |b| b % 0xE0));
        assert!(s.opened, "seed {seed}: {s:?}");
        assert_eq!(s.failed, 0, "seed {seed}: a call failed against an honest device: {s:?}");
        assert!(s.ok > 10, "seed {seed}: {s:?}");
    }
    // Across the seeds, reads of written buffers were checked (each seed's calls are random).
    let checked: u32 = (1..=20).map(|seed| run(&bytes(seed, 3000, |b| b % 0xE0)).reads_checked).sum();
    assert!(checked > 20, "only {checked} reads were checked");
}

#[test]
fn the_seed_corpus_and_generated_lies_break_no_promise() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/device_words");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        n += 1;
    }
    assert!(n >= 8, "the seed corpus in {dir} has only {n} inputs");
    // Lies of every kind, densely: about one byte in eight is a lie.
    for seed in 100..400 {
        run(&bytes(seed, 600, |b| if b % 8 == 0 { 0xE0 | b } else { b % 0xE0 }));
    }
}
