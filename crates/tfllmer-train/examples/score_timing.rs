//! Times scoring one history with the inference copy ([`Scorer`]) against
//! candle's `score_last`, on a random model of MovieLens-1M's size (3706
//! items, dim 64, max_len 200, 2 blocks, 1 head) and random full-length
//! histories.
//!
//! usage: cargo run --release -p tfllmer-train --example score_timing -- [sasrec|gru4rec] [HISTORIES]
//!
//! candle runs with one compute thread, so both time one core.
mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use tfllmer_train::model::{left_pad, Recommender};
use tfllmer_train::rng::SplitMix64;
use tfllmer_train::scorer::Scorer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backbone = common::backbone_arg(1);
    let count: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    tfllmer_train::threads::init_compute_threads(1);
    let (n_items, max_len) = (3706, 200);
    let config = common::config(backbone, n_items, max_len, 2);
    let mut rng = SplitMix64::new(1);
    let model = Recommender::new(config, None, &mut rng)?;
    let t = Instant::now();
    let scorer = Scorer::from_model(&model)?;
    println!(
        "{backbone:?}: from_model {:.1} ms, {:.2} MB held",
        t.elapsed().as_secs_f64() * 1e3,
        scorer.memory_bytes() as f64 / 1e6
    );
    let histories = common::random_sequences(&mut rng, count, max_len, n_items);

    // warm up (scratch memory, caches), then time every call
    for h in histories.iter().take(50) {
        std::hint::black_box(scorer.score_next(h));
    }
    let mut times = Vec::with_capacity(count);
    for h in &histories {
        let t = Instant::now();
        std::hint::black_box(scorer.score_next(h));
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    report("Scorer::score_next", &mut times);

    let mut out = Vec::new();
    let mut times = Vec::with_capacity(count);
    for h in &histories {
        let t = Instant::now();
        std::hint::black_box(scorer.score_next_into(h, &mut out));
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    report("Scorer::score_next_into", &mut times);

    // candle on fewer histories (it is much slower), checking equality too
    let mut times = Vec::new();
    let mut worst = 0.0f64;
    for h in histories.iter().take(count.min(200)) {
        let t = Instant::now();
        let seq = Tensor::from_vec(left_pad(&[h], max_len), (1, max_len), &Device::Cpu)?;
        let theirs = model.score_last(&seq)?.flatten_all()?.to_vec1::<f32>()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        let ours = scorer.score_next(h).ok_or("an empty history")?;
        let scale = theirs[1..].iter().fold(0.0f32, |a, &v| a.max(v.abs())) as f64;
        let diff = ours[1..].iter().zip(&theirs[1..]).fold(0.0f32, |a, (x, y)| a.max((x - y).abs())) as f64;
        worst = worst.max(diff / scale);
    }
    report("candle score_last", &mut times);
    println!("largest difference relative to the largest score: {worst:.1e}");
    Ok(())
}

fn report(label: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label}: median {:.1} µs, p99 {:.1} µs, min {:.1} µs ({} histories)",
        at(0.5),
        at(0.99),
        times[0],
        times.len()
    );
}
