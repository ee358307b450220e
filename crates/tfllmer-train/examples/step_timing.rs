//! Times the parts of one training step (forward, loss, backward, Adam) on
//! random data of a given size, to see where an epoch's time goes.
//!
//! usage: cargo run --release -p tfllmer-train --example step_timing -- [ITEMS] [BATCH] [LEN] [sasrec|gru4rec] [LAYERS] [STEPS]
//!
//! Besides wall-clock times it prints the process's CPU time per part
//! (all threads, user + system), steadier than wall time on a shared
//! machine; the last line gives the medians over the steps after the first.
mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use tfllmer_train::model::{left_pad, Recommender};
use tfllmer_train::rng::SplitMix64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, b, l) = (arg(1, 3706), arg(2, 128), arg(3, 200));
    let backbone = common::backbone_arg(4);
    let config = common::config(backbone, n, l, arg(5, 2));
    let mut rng = SplitMix64::new(1);
    let model = Recommender::new(config, None, &mut rng)?;
    let rows = common::random_sequences(&mut rng, b, l + 1, n);
    let inputs: Vec<&[u32]> = rows.iter().map(|r| &r[..l]).collect();
    let outputs: Vec<&[u32]> = rows.iter().map(|r| &r[1..]).collect();
    let seq = Tensor::from_vec(left_pad(&inputs, l), (b, l), &Device::Cpu)?;
    let targets = left_pad(&outputs, l);
    let mut opt = AdamW::new(model.vars(), ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() })?;
    let steps = arg(6, 3).max(1);
    let mut rows: Vec<[f64; 8]> = Vec::new();
    for step in 0..steps {
        let (t0, c0) = (Instant::now(), cpu_ms());
        let (h, _) = model.forward(&seq, Some(&mut rng))?;
        let (t1, c1) = (Instant::now(), cpu_ms());
        drop(h);
        let loss = model.loss(&seq, &targets, Some(&mut rng))?;
        let (t2, c2) = (Instant::now(), cpu_ms());
        let grads = loss.backward()?;
        let (t3, c3) = (Instant::now(), cpu_ms());
        opt.step(&grads)?;
        let (t4, c4) = (Instant::now(), cpu_ms());
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let row = [ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4), c1 - c0, c2 - c1, c3 - c2, c4 - c3];
        print_row(&format!("step {step}"), &row);
        rows.push(row);
    }
    if rows.len() > 1 {
        let mut median = [0.0; 8];
        for (k, m) in median.iter_mut().enumerate() {
            let mut v: Vec<f64> = rows[1..].iter().map(|r| r[k]).collect();
            v.sort_by(f64::total_cmp);
            *m = v[v.len() / 2];
        }
        print_row("median", &median);
    }
    Ok(())
}

fn print_row(label: &str, r: &[f64; 8]) {
    println!(
        "{label}: forward {:.0} ms, forward+loss {:.0} ms, backward {:.0} ms, adam {:.0} ms \
         | cpu {:.0} / {:.0} / {:.0} / {:.0} ms",
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
    );
}

/// CPU time of the whole process so far (every thread, user + system), ms.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes into the struct it is given
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}
