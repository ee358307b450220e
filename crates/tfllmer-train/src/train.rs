//! The training scheme of shared/reference/sasrec_ref.py: one sample per
//! user per epoch (the training sequence, latest `max_len` items), next-item
//! cross-entropy at every position, Adam, validation NDCG@10 after every
//! epoch, early stopping with patience, the best epoch's weights kept.

use std::time::Instant;

use candle_core::{Device, IndexOp, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use tfllmer_core::ranking::{Ranker, RankingMetrics};

use crate::loss::Negatives;
use crate::model::{left_pad, Objective, Recommender};
use crate::optim::ItemRows;
use crate::rng::SplitMix64;
use crate::sampling::{NegativeSampler, RowSubset, Sampler};

#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub patience: usize,
    pub loss: Loss,
}

/// The training loss (shared/API.md's option "loss").
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// softmax cross-entropy over every item: 6·P·N·d flops an epoch
    /// (P positions, N items)
    Full,
    /// the target against `negatives` items drawn for each sequence of the
    /// batch and shared by its positions, with the logQ correction
    /// ([`crate::loss::sampled_cross_entropy`]): 6·P·K·d flops an epoch
    SampledSoftmax { negatives: usize, sampler: Sampler },
}

impl Default for TrainOptions {
    fn default() -> Self {
        use crate::options::defaults;
        Self {
            epochs: defaults::EPOCHS,
            batch_size: defaults::BATCH_SIZE,
            learning_rate: defaults::LEARNING_RATE,
            patience: defaults::PATIENCE,
            loss: Loss::Full,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_hr10: f64,
    pub valid_ndcg10: f64,
    pub epoch_ms: f64,
}

/// What the caller says after each batch and epoch (e.g. a cancel request).
pub enum Control {
    Continue,
    Stop,
}

/// Who follows a training run: hears every batch and every epoch, and may
/// stop the run at either (a cancel request, a time limit).
pub trait TrainObserver {
    /// After each optimisation step.
    fn between_batches(&mut self) -> Control;
    /// After each epoch's validation.
    fn on_epoch(&mut self, report: &EpochReport) -> Control;
}

/// An observer made of two closures (tests, examples).
pub struct Callbacks<E, B> {
    pub on_epoch: E,
    pub between_batches: B,
}

impl<E: FnMut(&EpochReport) -> Control, B: FnMut() -> Control> TrainObserver for Callbacks<E, B> {
    fn between_batches(&mut self) -> Control {
        (self.between_batches)()
    }
    fn on_epoch(&mut self, report: &EpochReport) -> Control {
        (self.on_epoch)(report)
    }
}

/// The users whose training sequences make samples: input q[..n−1],
/// targets q[1..], so a sequence needs at least 2 items.
pub fn training_samples<'a>(train: &[&'a [u32]]) -> Vec<&'a [u32]> {
    train.iter().copied().filter(|q| q.len() >= 2).collect()
}

/// Optimisation steps per epoch for `samples` samples.
pub fn batches_per_epoch(samples: usize, batch_size: usize) -> usize {
    samples.div_ceil(batch_size.max(1)).max(1)
}

/// A seeded sample of `size` of the users 0..n_users (all of them when
/// size ≥ n_users), ascending: the users validation and test rank when the
/// user count is large (option eval_users). Drawn from its own generator,
/// so the training run's random numbers do not depend on it.
pub fn user_sample(n_users: usize, size: usize, seed: u64) -> Vec<usize> {
    if size >= n_users {
        return (0..n_users).collect();
    }
    // the first `size` places of a partial Fisher-Yates shuffle
    let mut rng = SplitMix64::new(seed ^ 0x6576_616c_7573_6572);
    let mut all: Vec<usize> = (0..n_users).collect();
    for i in 0..size {
        let j = i + (rng.next_u64() % (n_users - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(size);
    all.sort_unstable();
    all
}

/// Ranks `target` after each history (full ranking, history masked) and
/// returns HR/NDCG at `k`. Scores a block of histories at a time against
/// the whole table (normalised once), blocks sized so that their scores
/// stay under 64 MB whatever the catalogue.
pub fn evaluate(model: &Recommender, cases: &[(&[u32], u32)], k: usize) -> Result<RankingMetrics> {
    evaluate_among(model, cases, k, None)
}

/// [`evaluate`] with the ranking restricted to the tokens marked in
/// `eligible` (index = token; None: every item): the others never rank
/// ahead of a target (e.g. only the cold-start items, as a "new items"
/// shelf ranks them).
pub fn evaluate_among(
    model: &Recommender,
    cases: &[(&[u32], u32)],
    k: usize,
    eligible: Option<&[bool]>,
) -> Result<RankingMetrics> {
    let mut metrics = RankingMetrics::new(k);
    let mut ranker = Ranker::new(model.config.n_items);
    let len = model.config.max_len;
    let table = model.item_table()?;
    let block = (EVAL_SCORES / (model.config.n_items + 1)).clamp(1, 256);
    for chunk in cases.chunks(block) {
        let histories: Vec<&[u32]> = chunk.iter().map(|c| c.0).collect();
        let seq = Tensor::from_vec(left_pad(&histories, len), (chunk.len(), len), &Device::Cpu)?;
        let scores =
            model.last_hidden(&seq)?.matmul(&table.t()?)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for ((history, target), row) in chunk.iter().zip(&scores) {
            match eligible {
                None => metrics.add(ranker.rank_of_target(row, *target, history)),
                Some(eligible) => {
                    let mut row = row.clone();
                    for (s, &ok) in row.iter_mut().zip(eligible) {
                        if !ok {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                    metrics.add(ranker.rank_of_target(&row, *target, history));
                }
            }
        }
    }
    Ok(metrics)
}

/// Scores held at once by [`evaluate`] (16M f32: 64 MB).
const EVAL_SCORES: usize = 1 << 24;

/// Trains `model` in place. `train` holds each user's training sequence,
/// `valid` the validation cases. `observer` hears every batch and epoch and
/// may stop the run. Returns the reports; the model ends with the weights
/// of the best epoch.
pub fn train(
    model: &Recommender,
    train: &[&[u32]],
    valid: &[(&[u32], u32)],
    options: &TrainOptions,
    rng: &mut SplitMix64,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<EpochReport>> {
    let vars = model.vars();
    let params = ParamsAdamW { lr: options.learning_rate, weight_decay: 0.0, ..Default::default() };
    // the item table takes lazy Adam (only the rows a step used), the rest dense Adam
    let encoder: Vec<Var> = model.named_vars().into_iter().filter(|(n, _)| n != "item").map(|(_, v)| v).collect();
    let mut opt = AdamW::new(encoder, params.clone())?;
    let mut items = ItemRows::new(&model.item, params)?;
    let n_items = model.config.n_items;
    let len = model.config.max_len;
    let samples = training_samples(train);
    let sampler = match options.loss {
        Loss::Full => None,
        Loss::SampledSoftmax { negatives, sampler } => {
            let draws = match sampler {
                Sampler::Uniform => NegativeSampler::uniform(n_items),
                Sampler::Popularity => NegativeSampler::popularity(&NegativeSampler::counts(&samples, n_items)),
            };
            Some((draws, negatives))
        }
    };
    let all_rows: Vec<u32> = (0..=n_items as u32).collect();
    let mut subset = RowSubset::new(n_items);
    let mut reports = Vec::new();
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut since_best = 0;
    'epochs: for epoch in 1..=options.epochs {
        let started = Instant::now();
        let order = rng.permutation(samples.len());
        let (mut loss_sum, mut positions) = (0.0f64, 0usize);
        for chunk in order.chunks(options.batch_size.max(1)) {
            let inputs: Vec<&[u32]> = chunk.iter().map(|&i| &samples[i][..samples[i].len() - 1]).collect();
            let outputs: Vec<&[u32]> = chunk.iter().map(|&i| &samples[i][1..]).collect();
            let seq = left_pad(&inputs, len);
            let targets = left_pad(&outputs, len);
            let count = targets.iter().filter(|&&t| t > 0).count();
            // the rows this step reads and updates, and the batch in their numbering
            let (rows, seq, targets, negatives) = match &sampler {
                None => (&all_rows[..], seq, targets, None),
                Some((draws, k)) => {
                    // K negatives per sequence, shared by its positions (the
                    // loss sees the non-padding positions, sequence after sequence)
                    let drawn = draws.draw(k * chunk.len(), rng);
                    let mut starts = Vec::with_capacity(chunk.len());
                    let mut at = 0;
                    for row in targets.chunks(len) {
                        starts.push(at);
                        at += row.iter().filter(|&&t| t > 0).count();
                    }
                    subset.collect([&seq[..], &targets[..], &drawn[..]]);
                    // ln(K·Q) of each row (row 0, padding, is never a candidate: any finite value)
                    let ln_k = (*k as f64).ln();
                    let correction = subset.rows().iter().map(|&r| ln_k + draws.log_q(r).unwrap_or(0.0)).collect();
                    let negatives = Negatives { rows: subset.local(&drawn), starts, correction: Some(correction) };
                    (subset.rows(), subset.local(&seq), subset.local(&targets), Some(negatives))
                }
            };
            let picked = Var::from_tensor(&items.gather(rows)?)?;
            let seq = Tensor::from_vec(seq, (chunk.len(), len), &Device::Cpu)?;
            let objective = negatives.as_ref().map_or(Objective::Full, Objective::Sampled);
            let loss = model.loss_with(picked.as_tensor(), &seq, &targets, objective, Some(rng))?;
            loss_sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * count as f64;
            positions += count;
            let grads = loss.backward()?;
            opt.step(&grads)?;
            if let Some(g) = grads.get(&picked) {
                // row 0 is padding: never updated
                items.step(&rows[1..], &g.i(1..)?)?;
            }
            // a test-only fault point (feature "failpoints"): a panic here
            // is a panic inside a training job
            fail::fail_point!("train-batch");
            if let Control::Stop = observer.between_batches() {
                break 'epochs;
            }
        }
        items.write_to(&model.item)?;
        let epoch_ms = started.elapsed().as_secs_f64() * 1e3;
        let metrics = evaluate(model, valid, 10)?;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / positions.max(1) as f64,
            valid_hr10: metrics.hr(),
            valid_ndcg10: metrics.ndcg(),
            epoch_ms,
        };
        let improved = best.as_ref().is_none_or(|(b, _)| report.valid_ndcg10 > *b);
        if improved {
            let snapshot = vars.iter().map(|v| v.as_tensor().copy()).collect::<Result<Vec<_>>>()?;
            best = Some((report.valid_ndcg10, snapshot));
            since_best = 0;
        } else {
            since_best += 1;
        }
        let stop = matches!(observer.on_epoch(&report), Control::Stop);
        reports.push(report);
        if stop || since_best >= options.patience {
            break;
        }
    }
    // a run stopped between batches leaves the model as it was trained so far
    items.write_to(&model.item)?;
    if let Some((_, snapshot)) = best {
        for (v, t) in vars.iter().zip(snapshot) {
            v.set(&t)?;
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backbone, ModelConfig};
    use candle_core::DType;

    /// Users walk through items 1..=n in steps of one (wrapping): a pattern a
    /// sequential model learns quickly and a random ranking does not know.
    fn walks(users: usize, n: u32, len: usize) -> Vec<Vec<u32>> {
        (0..users).map(|u| (0..len).map(|k| 1 + (u as u32 * 3 + k as u32) % n).collect()).collect()
    }

    #[test]
    fn metrics_of_a_perfect_and_a_useless_ranking() {
        let cfg = ModelConfig {
            backbone: Backbone::SasRec,
            n_items: 5,
            dim: 4,
            max_len: 3,
            layers: 1,
            heads: 1,
            dropout: 0.0,
            normalize: true,
            dtype: DType::F32,
            temperature: None,
        };
        let m = Recommender::new(cfg, None, &mut SplitMix64::new(1)).unwrap();
        // with every other item in the history, the one item left must rank first
        let cases: Vec<(&[u32], u32)> = vec![(&[1, 2, 3, 4][..], 5)];
        let all_masked = evaluate(&m, &cases, 1).unwrap();
        assert_eq!((all_masked.hr(), all_masked.ndcg()), (1.0, 1.0));
    }

    /// A one-block SASRec small enough for the walks.
    fn walk_model(n_items: usize) -> ModelConfig {
        ModelConfig {
            backbone: Backbone::SasRec,
            n_items,
            dim: 16,
            max_len: 8,
            layers: 1,
            heads: 1,
            dropout: 0.1,
            normalize: true,
            dtype: DType::F32,
            temperature: None,
        }
    }

    #[test]
    fn training_learns_the_walk_and_keeps_the_best_epoch() {
        let n = 30;
        let seqs = walks(120, n, 9);
        let train_part: Vec<&[u32]> = seqs.iter().map(|q| &q[..7]).collect();
        let valid: Vec<(&[u32], u32)> = seqs.iter().map(|q| (&q[..7], q[7])).collect();
        let cfg = walk_model(n as usize);
        let mut rng = SplitMix64::new(3);
        let model = Recommender::new(cfg, None, &mut rng).unwrap();
        let before = evaluate(&model, &valid, 10).unwrap().ndcg();
        let options = TrainOptions { epochs: 15, batch_size: 32, learning_rate: 5e-3, patience: 100, loss: Loss::Full };
        let mut seen = Vec::new();
        let reports = train(
            &model,
            &train_part,
            &valid,
            &options,
            &mut rng,
            &mut Callbacks {
                on_epoch: |r: &EpochReport| {
                    seen.push(r.epoch);
                    Control::Continue
                },
                between_batches: || Control::Continue,
            },
        )
        .unwrap();
        assert_eq!(seen, (1..=15).collect::<Vec<_>>());
        assert!(reports.last().unwrap().train_loss < reports[0].train_loss);
        let best = reports.iter().map(|r| r.valid_ndcg10).fold(0.0, f64::max);
        let after = evaluate(&model, &valid, 10).unwrap().ndcg();
        assert!(best > before + 0.3, "valid NDCG@10 {before} -> best {best}");
        // the model holds the best epoch's weights (dropout is off in evaluation)
        assert!((after - best).abs() < 1e-9, "kept {after}, best {best}");
    }

    #[test]
    fn the_sampled_softmax_learns_the_walk_too_and_is_reproducible() {
        let n = 60;
        let seqs = walks(200, n, 9);
        let train_part: Vec<&[u32]> = seqs.iter().map(|q| &q[..7]).collect();
        let valid: Vec<(&[u32], u32)> = seqs.iter().map(|q| (&q[..7], q[7])).collect();
        let cfg = walk_model(n as usize);
        for sampler in [Sampler::Uniform, Sampler::Popularity] {
            let run = || {
                let mut rng = SplitMix64::new(3);
                let model = Recommender::new(cfg.clone(), None, &mut rng).unwrap();
                let before = evaluate(&model, &valid, 10).unwrap().ndcg();
                let loss = Loss::SampledSoftmax { negatives: 8, sampler };
                let options = TrainOptions { epochs: 15, batch_size: 32, learning_rate: 5e-3, patience: 100, loss };
                let mut quiet =
                    Callbacks { on_epoch: |_: &EpochReport| Control::Continue, between_batches: || Control::Continue };
                let reports = train(&model, &train_part, &valid, &options, &mut rng, &mut quiet).unwrap();
                (before, reports)
            };
            let (before, reports) = run();
            // 8 negatives of 60 items, and still the full ranking improves
            let best = reports.iter().map(|r| r.valid_ndcg10).fold(0.0, f64::max);
            assert!(best > before + 0.3, "{sampler:?}: valid NDCG@10 {before} -> best {best}");
            assert!(reports.last().unwrap().train_loss < reports[0].train_loss);
            assert_eq!(
                reports.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
                run().1.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
                "same seed, same run"
            );
        }
    }

    #[test]
    fn user_samples_are_seeded_distinct_and_all_when_asked_for_more() {
        assert_eq!(user_sample(5, 9, 1), vec![0, 1, 2, 3, 4]);
        let a = user_sample(10_000, 1_000, 7);
        assert_eq!(a, user_sample(10_000, 1_000, 7));
        assert_ne!(a, user_sample(10_000, 1_000, 8));
        assert_eq!(a.len(), 1_000);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 10_000);
        // spread over the whole range, not the first users
        assert!(a.iter().filter(|&&u| u >= 5_000).count() > 400);
    }

    #[test]
    fn stopping_between_batches_ends_the_run() {
        let seqs = walks(40, 10, 6);
        let train_part: Vec<&[u32]> = seqs.iter().map(|q| &q[..4]).collect();
        let valid: Vec<(&[u32], u32)> = seqs.iter().map(|q| (&q[..4], q[4])).collect();
        let cfg = ModelConfig {
            backbone: Backbone::SasRec,
            n_items: 10,
            dim: 8,
            max_len: 5,
            layers: 1,
            heads: 1,
            dropout: 0.0,
            normalize: false,
            dtype: DType::F32,
            temperature: None,
        };
        let mut rng = SplitMix64::new(4);
        let model = Recommender::new(cfg, None, &mut rng).unwrap();
        let mut batches = 0;
        let options = TrainOptions { epochs: 50, batch_size: 8, ..TrainOptions::default() };
        let mut observer = Callbacks {
            on_epoch: |_: &EpochReport| Control::Continue,
            between_batches: || {
                batches += 1;
                if batches == 3 {
                    Control::Stop
                } else {
                    Control::Continue
                }
            },
        };
        let reports = train(&model, &train_part, &valid, &options, &mut rng, &mut observer).unwrap();
        assert_eq!(batches, 3);
        assert!(reports.is_empty(), "no epoch finished");
    }
}
