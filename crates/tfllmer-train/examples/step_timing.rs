//! Times the parts of one training step (forward, loss, backward, Adam) on
//! random data of a given size, to see where an epoch's time goes.
//!
//! usage: cargo run --release -p tfllmer-train --example step_timing -- [ITEMS] [BATCH] [LEN] [sasrec|gru4rec] [LAYERS]
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use tfllmer_train::model::{left_pad, Backbone, ModelConfig, Recommender};
use tfllmer_train::rng::SplitMix64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, b, l) = (arg(1, 3706), arg(2, 128), arg(3, 200));
    let backbone =
        if std::env::args().nth(4).as_deref() == Some("gru4rec") { Backbone::Gru4Rec } else { Backbone::SasRec };
    let config = ModelConfig {
        backbone,
        n_items: n,
        dim: 64,
        max_len: l,
        layers: arg(5, 2),
        heads: 1,
        dropout: 0.2,
        normalize: true,
        dtype: DType::F32,
    };
    let mut rng = SplitMix64::new(1);
    let model = Recommender::new(config, None, &mut rng)?;
    let rows: Vec<Vec<u32>> =
        (0..b).map(|_| (0..=l).map(|_| 1 + (rng.next_u64() % n as u64) as u32).collect()).collect();
    let inputs: Vec<&[u32]> = rows.iter().map(|r| &r[..l]).collect();
    let outputs: Vec<&[u32]> = rows.iter().map(|r| &r[1..]).collect();
    let seq = Tensor::from_vec(left_pad(&inputs, l), (b, l), &Device::Cpu)?;
    let targets = left_pad(&outputs, l);
    let mut opt = AdamW::new(model.vars(), ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() })?;
    for step in 0..3 {
        let t0 = Instant::now();
        let (h, _) = model.forward(&seq, Some(&mut rng))?;
        let t1 = Instant::now();
        drop(h);
        let loss = model.loss(&seq, &targets, Some(&mut rng))?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        opt.step(&grads)?;
        let t4 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        println!(
            "step {step}: forward {:.0} ms, forward+loss {:.0} ms, backward {:.0} ms, adam {:.0} ms",
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t3, t4)
        );
    }
    Ok(())
}
