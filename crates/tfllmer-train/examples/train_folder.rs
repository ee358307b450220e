//! Trains a recommender on a data folder (interactions.csv) without
//! PostgreSQL and prints one JSON line per epoch, like
//! shared/reference/sasrec_ref.py, for cross-checks and timing.
//!
//! usage: cargo run --release -p tfllmer-train --example train_folder -- DIR
//!        [--backbone sasrec|gru4rec] [--epochs N] [--max-len L] [--dim D] [--batch B]
//!        [--no-normalize] [--seed S] [--threads T] [--patience P]
//!        [--loss full|sampled_softmax] [--negatives K] [--sampler uniform|popularity]
//!
//! `--threads T` builds the compute pool with T threads before anything else
//! runs (as the extension does); without it candle and rayon size their pools
//! from RAYON_NUM_THREADS, else from the number of cores.
use candle_core::DType;
use tfllmer_core::graph::Event;
use tfllmer_core::sequences::{leave_one_out, Histories};
use tfllmer_train::model::{Backbone, ModelConfig, Recommender};
use tfllmer_train::rng::SplitMix64;
use tfllmer_train::sampling::Sampler;
use tfllmer_train::train::{evaluate, train, Callbacks, Control, EpochReport, Loss, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: train_folder DIR [options]")?;
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    if let Some(threads) = args.iter().position(|a| a == "--threads").and_then(|i| args.get(i + 1)) {
        tfllmer_train::threads::init_compute_threads(threads.parse()?);
    }
    let backbone = if opt("--backbone", "sasrec") == "gru4rec" { Backbone::Gru4Rec } else { Backbone::SasRec };
    let text = std::fs::read_to_string(format!("{dir}/interactions.csv"))?;
    let mut events = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<i64> = line.split(',').map(|x| x.trim().parse()).collect::<Result<_, _>>()?;
        events.push(Event { user: f[0], item: f[1], time: f[2] });
    }
    let histories = Histories::from_events(events);
    let split = leave_one_out(&histories);
    let config = ModelConfig {
        backbone,
        n_items: histories.n_items(),
        dim: opt("--dim", "64").parse()?,
        max_len: opt("--max-len", "200").parse()?,
        layers: 2,
        heads: 1,
        dropout: 0.2,
        normalize: !args.iter().any(|a| a == "--no-normalize"),
        dtype: DType::F32,
        temperature: None,
    };
    let mut rng = SplitMix64::new(opt("--seed", "7").parse()?);
    let model = Recommender::new(config, None, &mut rng)?;
    let options = TrainOptions {
        epochs: opt("--epochs", "3").parse()?,
        batch_size: opt("--batch", "128").parse()?,
        learning_rate: 1e-3,
        patience: opt("--patience", "10").parse()?,
        loss: match opt("--loss", "full").as_str() {
            "full" => Loss::Full,
            "sampled_softmax" => Loss::SampledSoftmax {
                negatives: opt("--negatives", "1024").parse()?,
                sampler: if opt("--sampler", "uniform") == "popularity" {
                    Sampler::Popularity
                } else {
                    Sampler::Uniform
                },
            },
            other => return Err(format!("--loss must be full or sampled_softmax, not {other}").into()),
        },
    };
    let train_seqs: Vec<&[u32]> = split.train.iter().map(|t| t.1).collect();
    let valid: Vec<(&[u32], u32)> = split.valid.iter().map(|v| (v.1, v.2)).collect();
    let test: Vec<(&[u32], u32)> = split.test.iter().map(|v| (v.1, v.2)).collect();
    train(
        &model,
        &train_seqs,
        &valid,
        &options,
        &mut rng,
        &mut Callbacks {
            on_epoch: |r: &EpochReport| {
                println!(
                "{{\"epoch\": {}, \"loss\": {:.5}, \"epoch_s\": {:.2}, \"valid_ndcg10\": {:.4}, \"valid_hr10\": {:.4}}}",
                r.epoch,
                r.train_loss,
                r.epoch_ms / 1e3,
                r.valid_ndcg10,
                r.valid_hr10
            );
                Control::Continue
            },
            between_batches: || Control::Continue,
        },
    )?;
    let t = evaluate(&model, &test, 10)?;
    println!(
        "{{\"final\": true, \"threads\": {}, \"test_hr@10\": {:.4}, \"test_ndcg@10\": {:.4}}}",
        rayon::current_num_threads(),
        t.hr(),
        t.ndcg()
    );
    Ok(())
}
