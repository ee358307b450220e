//! An inference-only copy of a trained [`Recommender`] for scoring one
//! sequence at a time inside a database backend: the weights as plain f32
//! vectors, the item table as the model uses it, and a forward pass of
//! plain loops and single-threaded block products (`kernels::gemm` with no
//! parallelism). No candle op and no thread pool runs at scoring time: a
//! backend must never start threads, and candle's per-op overhead would
//! dominate a single sequence anyway.
//!
//! The result equals `Recommender::score_last` on the history left-padded
//! to `max_len` up to f32 rounding (the same kernels: lane reductions,
//! exp, GELU's erf; an f64 model uses the exact erf), while doing less work:
//! - SASRec runs the real tokens only (n rows at positions max_len−n..): a
//!   real query never attends to padding keys, so padding rows cannot change
//!   it; the last block computes queries, FFN and output for the last row
//!   only, and causal attention skips the blocks above the diagonal.
//! - GRU4Rec's padding steps (zero input rows) do change the state, but
//!   the same way for every history: the states after k padding steps are
//!   computed once in [`Scorer::from_model`], and a history of n tokens
//!   starts from the one after max_len − n steps.
//!
//! Files: [`weights`] (the model's weights as f32, in the layouts the
//! passes read), `sasrec` (the SASRec pass), `gru4rec` (the GRU4Rec pass);
//! the loops they share (lane reductions, exp, erf, layer norm, the L2
//! normalisation, gemm) are [`crate::kernels`].

mod gru4rec;
mod sasrec;
mod weights;

use std::cell::RefCell;

use candle_core::Result;

use crate::kernels::{dispatch, normalize_rows};
use crate::model::{ModelConfig, Recommender};
use weights::{floats, transpose, values, Weights};

/// A ready-to-score, inference-only copy of a trained [`Recommender`].
pub struct Scorer {
    config: ModelConfig,
    /// (n_items + 1) × d as the model uses it: rows L2-normalised when
    /// `config.normalize`, row 0 zero (the input rows)
    table: Vec<f32>,
    /// the same transposed, d × (n_items + 1): scoring all items is then a
    /// sum of d long rows, which vectorises without horizontal sums
    table_t: Vec<f32>,
    /// unit-length raw rows for `similar` (zero rows stay zero), transposed
    /// likewise; None when `table_t` already holds them (normalised models)
    unit_t: Option<Vec<f32>>,
    weights: Weights,
    /// GRU4Rec's learned logit scale, multiplied into the state
    logit_scale: Option<f32>,
    /// 1/τ of a fixed temperature, multiplied into the state as candle's
    /// `hidden / τ` does
    inv_temperature: Option<f32>,
}

/// ⟨a, b⟩ summed as [`Scorer::score_next`] sums a column pass (four
/// products at a time, then the rest), so that scoring a few items gives
/// exactly the full ranking's scores.
fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
    let d = a.len();
    let mut o = 0.0f32;
    for (x, q) in b.chunks_exact(4).zip(a.chunks_exact(4)) {
        o += (q[0] * x[0] + q[1] * x[1]) + (q[2] * x[2] + q[3] * x[3]);
    }
    for k in d / 4 * 4..d {
        o += a[k] * b[k];
    }
    o
}

/// `rows` (r × d) L2-normalised as the model's item table normalises
/// them, row 0 (padding) zeroed.
fn unit_rows(mut rows: Vec<f32>, d: usize) -> Vec<f32> {
    rows[..d].iter_mut().for_each(|v| *v = 0.0);
    normalize_rows(&mut rows[d..], d);
    rows
}

thread_local! {
    /// Working memory of the forward pass, kept between calls so a request
    /// does not map and fault in fresh pages (it grows to the largest need
    /// seen: about 7·max_len·d + 32·max_len floats for SASRec).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of scratch memory (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // a nested call (not expected): use memory of its own
        Err(_) => f(&mut vec![0.0; len]),
    })
}

impl Scorer {
    /// Copies the weights of a trained model (any dtype) as f32.
    pub fn from_model(model: &Recommender) -> Result<Self> {
        let config = model.config.clone();
        let (n, d) = (config.n_items, config.dim);
        if d == 0 {
            candle_core::bail!("a model of dimension 0");
        }
        let raw = values(&model.item, (n + 1) * d, "item")?;
        let (table, unit_t) = if config.normalize {
            (unit_rows(raw, d), None)
        } else {
            let mut table = raw;
            table[..d].iter_mut().for_each(|v| *v = 0.0);
            (table.clone(), Some(transpose(&unit_rows(table, d), d)))
        };
        let table_t = transpose(&table, d);
        let (weights, logit_scale) = Weights::from_model(model)?;
        let inv_temperature = config.temperature.map(|t| (1.0 / t) as f32);
        Ok(Self { config, table, table_t, unit_t, weights, logit_scale, inv_temperature })
    }

    /// The item table of `model` as a scorer of it scores with, without
    /// building the scorer: (n_items + 1) × d values, row t =
    /// `item_row(t)` bit for bit (row 0 zero). For copying the item
    /// vectors elsewhere (an item index table).
    pub fn item_table_of(model: &Recommender) -> Result<Vec<f32>> {
        let (n, d) = (model.config.n_items, model.config.dim);
        let mut table = values(&model.item, (n + 1) * d, "item")?;
        if model.config.normalize {
            table = unit_rows(table, d);
        } else {
            table[..d].iter_mut().for_each(|v| *v = 0.0);
        }
        Ok(table)
    }

    /// Item rows (n × d, no padding row) as a scorer of a model of
    /// `config` scores them: unit length when the model normalises, else as
    /// they are; bit for bit what [`Scorer::item_table_of`] and the scorer
    /// make of the same stored rows. For rows kept beside the model (cold
    /// items) that go into an item index table.
    pub fn scoring_rows(config: &ModelConfig, mut rows: Vec<f32>) -> Vec<f32> {
        if config.normalize && config.dim > 0 && !rows.is_empty() {
            normalize_rows(&mut rows, config.dim);
        }
        rows
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn n_items(&self) -> usize {
        self.config.n_items
    }

    /// Bytes held (for a memory-bounded cache); the per-thread scratch of
    /// the forward pass is not counted.
    pub fn memory_bytes(&self) -> usize {
        let tables = floats(&self.table) + floats(&self.table_t) + self.unit_t.as_ref().map_or(0, floats);
        std::mem::size_of::<Self>() + tables + self.weights.memory_bytes()
    }

    /// Scores of every token 0..=n_items (index 0 = padding: −∞) for the
    /// item that follows `history` (tokens 1..=n_items, oldest first; only
    /// the latest max_len in-range tokens count, others are ignored). None
    /// when no token is in range. Equals `Recommender::score_last` on the
    /// history left-padded to max_len.
    pub fn score_next(&self, history: &[u32]) -> Option<Vec<f32>> {
        let mut out = Vec::new();
        self.score_next_into(history, &mut out).then_some(out)
    }

    /// [`Scorer::score_next`] into `out` (resized to n_items + 1), for
    /// callers that reuse the buffer; false (and `out` untouched) when no
    /// token is in range.
    pub fn score_next_into(&self, history: &[u32], out: &mut Vec<f32>) -> bool {
        let d = self.config.dim;
        let mut h = [0.0f32; 256];
        let mut big = Vec::new();
        let h: &mut [f32] = if d <= h.len() {
            &mut h[..d]
        } else {
            big.resize(d, 0.0);
            &mut big
        };
        if !self.query_into(history, h) {
            return false;
        }
        self.dot_cols(&self.table_t, h, out);
        true
    }

    /// The query vector after `history` (d values, tokens as for
    /// [`Scorer::score_next`]): the sequence representation times the
    /// model's logit scale or 1/temperature, so that the score of item
    /// token t is exactly `⟨query, item_row(t)⟩`. None when no token is in
    /// range.
    pub fn query_vector(&self, history: &[u32]) -> Option<Vec<f32>> {
        let mut h = vec![0.0; self.config.dim];
        self.query_into(history, &mut h).then_some(h)
    }

    fn query_into(&self, history: &[u32], h: &mut [f32]) -> bool {
        if !self.hidden(history, h) {
            return false;
        }
        self.scale_query(h);
        true
    }

    /// Multiplies the logit scale or 1/temperature into a representation.
    fn scale_query(&self, h: &mut [f32]) {
        if let Some(s) = self.logit_scale {
            h.iter_mut().for_each(|v| *v *= s);
        }
        if let Some(s) = self.inv_temperature {
            h.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// The row of item token `t` (1..=n_items) that scores are taken
    /// against (d values; unit length when the model normalises its items,
    /// or zero); None for 0 or a token above n_items.
    pub fn item_row(&self, t: u32) -> Option<&[f32]> {
        let (t, d) = (t as usize, self.config.dim);
        (1..=self.config.n_items).contains(&t).then(|| &self.table[t * d..(t + 1) * d])
    }

    /// `⟨query, item_row(t)⟩` for each of `tokens` (tokens out of range:
    /// −∞), summed in the order `score_next` sums them, so a candidate
    /// scores exactly as it does in the full ranking; for a few candidates
    /// without scoring the whole catalogue. `query` has d values.
    pub fn score_tokens(&self, query: &[f32], tokens: &[u32]) -> Vec<f32> {
        tokens.iter().map(|&t| self.item_row(t).map_or(f32::NEG_INFINITY, |row| dot_in_order(query, row))).collect()
    }

    /// [`Scorer::similar`]'s scores of `tokens` only (out of range, or
    /// `token` itself: −∞), equal to it bit for bit, without scoring the
    /// whole catalogue. None when `token` is 0 or above n_items.
    pub fn similar_tokens(&self, token: u32, tokens: &[u32]) -> Option<Vec<f32>> {
        let (m, d) = (self.config.n_items + 1, self.config.dim);
        let unit_row = |t: u32| -> Option<Vec<f32>> {
            let t = t as usize;
            if !(1..m).contains(&t) {
                return None;
            }
            Some(match &self.unit_t {
                Some(unit_t) => (0..d).map(|k| unit_t[k * m + t]).collect(),
                None => self.table[t * d..(t + 1) * d].to_vec(),
            })
        };
        let query = unit_row(token)?;
        Some(
            tokens
                .iter()
                .map(|&t| match unit_row(t) {
                    Some(row) if t != token => dot_in_order(&query, &row),
                    _ => f32::NEG_INFINITY,
                })
                .collect(),
        )
    }

    /// Cosine similarity of item `token` to every token 0..=n_items (index
    /// 0 and `token` itself: −∞; zero rows: 0), from the model's raw item
    /// rows. None when `token` is 0 or above n_items.
    pub fn similar(&self, token: u32) -> Option<Vec<f32>> {
        let t = token as usize;
        if t == 0 || t > self.config.n_items {
            return None;
        }
        let (m, d) = (self.config.n_items + 1, self.config.dim);
        let mut out = Vec::new();
        match &self.unit_t {
            Some(unit_t) => {
                let row: Vec<f32> = (0..d).map(|k| unit_t[k * m + t]).collect();
                self.dot_cols(unit_t, &row, &mut out);
            }
            None => self.dot_cols(&self.table_t, &self.table[t * d..(t + 1) * d], &mut out),
        }
        out[t] = f32::NEG_INFINITY;
        Some(out)
    }

    /// out = rows · v for the rows whose transpose is `cols` (d × (n_items + 1)),
    /// out[0] = −∞.
    fn dot_cols(&self, cols: &[f32], v: &[f32], out: &mut Vec<f32>) {
        let (m, d) = (self.config.n_items + 1, self.config.dim);
        out.clear();
        out.resize(m, 0.0);
        dispatch(
            #[inline(always)]
            || {
                // four columns per pass over `out`: a quarter of its loads and stores
                let mut quads = cols.chunks_exact(4 * m).zip(v.chunks_exact(4));
                for (c, a) in &mut quads {
                    let (c0, rest) = c.split_at(m);
                    let (c1, rest) = rest.split_at(m);
                    let (c2, c3) = rest.split_at(m);
                    for ((((o, &x0), &x1), &x2), &x3) in out.iter_mut().zip(c0).zip(c1).zip(c2).zip(c3) {
                        *o += (a[0] * x0 + a[1] * x1) + (a[2] * x2 + a[3] * x3);
                    }
                }
                for (c, &a) in cols.chunks_exact(m).zip(v).skip(d / 4 * 4) {
                    out.iter_mut().zip(c).for_each(|(o, &x)| *o += a * x);
                }
            },
        );
        out[0] = f32::NEG_INFINITY;
    }

    /// Where the latest max_len in-range tokens of `history` start, and how
    /// many there are.
    fn window(&self, history: &[u32]) -> (usize, usize) {
        let n_items = self.config.n_items as u64;
        let (mut start, mut count) = (history.len(), 0);
        while start > 0 && count < self.config.max_len {
            start -= 1;
            if (1..=n_items).contains(&u64::from(history[start])) {
                count += 1;
            }
        }
        (start, count)
    }

    /// The sequence representation after `history` (before any logit
    /// scale) into `h` (d values); false when no token is in range.
    fn hidden(&self, history: &[u32], h: &mut [f32]) -> bool {
        let (start, n) = self.window(history);
        if n == 0 {
            return false;
        }
        let (n_items, d) = (self.config.n_items as u64, self.config.dim);
        let rows = history[start..]
            .iter()
            .filter(|&&t| (1..=n_items).contains(&u64::from(t)))
            .map(|&t| &self.table[t as usize * d..(t as usize + 1) * d]);
        self.hidden_of_rows(rows, n, h);
        true
    }

    /// The sequence representation after the `n` item rows `rows` (oldest
    /// first, n ≤ max_len) into `h`.
    fn hidden_of_rows<'r>(&self, rows: impl Iterator<Item = &'r [f32]>, n: usize, h: &mut [f32]) {
        match &self.weights {
            Weights::SasRec { pos, layers, ln_final } => self.sasrec(rows, n, pos, layers, ln_final, h),
            Weights::Gru4Rec { input, hidden_t, hidden_b, padded } => {
                self.gru4rec(rows, n, input, hidden_t, hidden_b, padded, h)
            }
        }
    }

    /// The query vector after a history given by its item rows instead of
    /// its tokens: `rows` holds n × d values, oldest first, each row as
    /// [`Scorer::item_row`] gives it (for example read back from an item
    /// index table, `item_vectors`' output); only the latest max_len rows
    /// count, a trailing partial row is ignored. Equals
    /// [`Scorer::query_vector`] of those rows' tokens bit for bit; works on
    /// the scorer of an encoder without its item table
    /// ([`crate::model_file::encoder_from_parts`]). None for
    /// no rows.
    pub fn query_vector_of_rows(&self, rows: &[f32]) -> Option<Vec<f32>> {
        let d = self.config.dim;
        let all = rows.len() / d;
        let n = all.min(self.config.max_len);
        if n == 0 {
            return None;
        }
        let mut h = vec![0.0; d];
        self.hidden_of_rows(rows[(all - n) * d..all * d].chunks_exact(d), n, &mut h);
        self.scale_query(&mut h);
        Some(h)
    }

    /// `⟨query, row⟩` summed in the order [`Scorer::score_next`] sums a
    /// column: the score an item of that row gets in the full ranking, bit
    /// for bit (rows as [`Scorer::item_row`] gives them).
    pub fn score_row(query: &[f32], row: &[f32]) -> f32 {
        dot_in_order(query, row)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::model::{left_pad, Backbone};
    use crate::rng::SplitMix64;

    #[allow(clippy::too_many_arguments)]
    fn config(
        backbone: Backbone,
        n_items: usize,
        dim: usize,
        max_len: usize,
        layers: usize,
        heads: usize,
        normalize: bool,
        temperature: Option<f64>,
    ) -> ModelConfig {
        ModelConfig {
            backbone,
            n_items,
            dim,
            max_len,
            layers,
            heads,
            dropout: 0.3,
            normalize,
            dtype: DType::F32,
            temperature,
        }
    }

    /// A random model whose every parameter is moved off its initial value
    /// (layer norms off 1/0, larger positions and item rows of uneven norms),
    /// so no part of the forward pass is trivially the identity.
    fn random_model(cfg: ModelConfig, seed: u64) -> Recommender {
        let mut rng = SplitMix64::new(seed);
        let m = Recommender::new(cfg, None, &mut rng).unwrap();
        for (name, v) in m.named_vars() {
            let t = v.as_tensor();
            let base = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let std = if name == "pos" || name.contains("ln") {
                0.3
            } else if name == "item" {
                0.5
            } else {
                0.05
            };
            let noise = rng.normals(base.len(), std);
            let mut moved: Vec<f64> = base.iter().zip(&noise).map(|(&b, &e)| b + e as f64).collect();
            if name == "item" {
                // rows of very different lengths (row 0 is never used)
                let d = m.config.dim;
                for (r, row) in moved.chunks_mut(d).enumerate() {
                    let s = 0.2 + (r % 5) as f64;
                    row.iter_mut().for_each(|x| *x *= s);
                }
            }
            if name == "logit_scale" {
                moved = vec![9.5];
            }
            v.set(&Tensor::from_vec(moved, t.shape(), &Device::Cpu).unwrap().to_dtype(t.dtype()).unwrap()).unwrap();
        }
        m
    }

    fn random_history(rng: &mut SplitMix64, len: usize, n_items: usize) -> Vec<u32> {
        (0..len).map(|_| 1 + (rng.next_u64() % n_items as u64) as u32).collect()
    }

    /// candle's scores for the (already filtered) history left-padded to max_len.
    fn reference(m: &Recommender, history: &[u32]) -> Vec<f64> {
        let l = m.config.max_len;
        let seq = Tensor::from_vec(left_pad(&[history], l), (1, l), &Device::Cpu).unwrap();
        let s = m.score_last(&seq).unwrap().to_dtype(DType::F64).unwrap();
        s.to_vec2::<f64>().unwrap().remove(0)
    }

    /// The largest difference over tokens 1..=n relative to the largest score
    /// (index 0 must be −∞).
    fn relative_diff(ours: &[f32], theirs: &[f64]) -> f64 {
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(ours[0], f32::NEG_INFINITY);
        let magnitude = theirs[1..].iter().fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(magnitude > 1e-3, "scores too small to compare: {magnitude}");
        let diff = ours[1..].iter().zip(&theirs[1..]).fold(0.0f64, |a, (&x, &y)| a.max((x as f64 - y).abs()));
        diff / magnitude
    }

    fn check_equal(cfg: ModelConfig, seed: u64) {
        let m = random_model(cfg.clone(), seed);
        let scorer = Scorer::from_model(&m).unwrap();
        let mut rng = SplitMix64::new(seed + 1000);
        let l = cfg.max_len;
        for len in [1, 2, l / 2, l - 1, l, l + 1, 2 * l + 3] {
            let history = random_history(&mut rng, len, cfg.n_items);
            let ours = scorer.score_next(&history).unwrap();
            let theirs = reference(&m, &history);
            let rel = relative_diff(&ours, &theirs);
            assert!(rel < 1e-4, "{cfg:?}, history of {len}: relative difference {rel}");
        }
    }

    #[test]
    fn sasrec_scores_equal_the_models() {
        let mut seed = 1;
        for (layers, heads) in [(1, 1), (1, 2), (2, 1), (2, 2), (0, 1)] {
            for normalize in [true, false] {
                for temperature in [None, Some(0.4)] {
                    check_equal(config(Backbone::SasRec, 40, 8, 7, layers, heads, normalize, temperature), seed);
                    seed += 1;
                }
            }
        }
        // several query blocks and longer rows (QUERY_BLOCK = 32)
        check_equal(config(Backbone::SasRec, 300, 16, 90, 2, 2, true, None), 77);
        check_equal(config(Backbone::SasRec, 300, 16, 70, 3, 4, false, Some(2.0)), 78);
        // rows of whole and partial lanes (LANES = 16), the benchmark's shape
        check_equal(config(Backbone::SasRec, 200, 24, 40, 2, 3, true, None), 79);
        check_equal(config(Backbone::SasRec, 500, 64, 50, 2, 1, true, None), 80);
    }

    #[test]
    fn gru4rec_scores_equal_the_models() {
        let mut seed = 100;
        for normalize in [true, false] {
            for temperature in [None, Some(0.3)] {
                check_equal(config(Backbone::Gru4Rec, 40, 8, 7, 1, 1, normalize, temperature), seed);
                seed += 1;
            }
        }
        check_equal(config(Backbone::Gru4Rec, 300, 16, 90, 1, 1, true, None), 177);
        // whole blocks of the hidden product (GRU_BLOCK = 64), a partial one, an odd dim
        check_equal(config(Backbone::Gru4Rec, 200, 64, 30, 1, 1, true, None), 178);
        check_equal(config(Backbone::Gru4Rec, 200, 71, 30, 1, 1, false, Some(0.5)), 179);
    }

    #[test]
    fn gru4rec_padding_steps_matter_and_are_reproduced() {
        // the same history under different max_len: candle's state differs
        // (more zero-input steps first), and so must ours
        let mut scores = Vec::new();
        for max_len in [4, 9] {
            let m = random_model(config(Backbone::Gru4Rec, 20, 8, max_len, 1, 1, true, None), 5);
            let s = Scorer::from_model(&m).unwrap();
            let history = [3, 1, 4];
            let ours = s.score_next(&history).unwrap();
            assert!(relative_diff(&ours, &reference(&m, &history)) < 1e-4);
            scores.push(ours);
        }
        assert_ne!(scores[0], scores[1]);
    }

    #[test]
    fn a_double_precision_model_scores_the_same() {
        for backbone in [Backbone::SasRec, Backbone::Gru4Rec] {
            let cfg = ModelConfig { dtype: DType::F64, ..config(backbone, 30, 8, 6, 2, 2, true, None) };
            check_equal(cfg, 31);
        }
    }

    #[test]
    fn out_of_range_tokens_are_ignored_and_empty_histories_score_nothing() {
        for backbone in [Backbone::SasRec, Backbone::Gru4Rec] {
            let cfg = config(backbone, 20, 8, 5, 2, 2, true, None);
            let m = random_model(cfg, 3);
            let s = Scorer::from_model(&m).unwrap();
            let clean = [4u32, 7, 1, 20, 9, 2, 11];
            let noisy = [0u32, 4, 21, 7, u32::MAX, 1, 20, 0, 9, 2, 1000, 11, 0];
            let a = s.score_next(&clean).unwrap();
            assert_eq!(a, s.score_next(&noisy).unwrap());
            assert!(relative_diff(&a, &reference(&m, &clean)) < 1e-4);
            // the latest max_len in-range tokens decide, whatever lies between them
            assert_eq!(s.score_next(&[20, 9, 2, 11, 0]).unwrap().len(), 21);
            assert_eq!(s.score_next(&clean[2..]).unwrap(), s.score_next(&[0, 1, 20, 21, 9, 2, 0, 11]).unwrap());
            assert!(s.score_next(&[]).is_none());
            assert!(s.score_next(&[0, 21, 500]).is_none());
            let mut out = vec![1.0; 3];
            assert!(!s.score_next_into(&[0], &mut out));
            assert_eq!(out, vec![1.0; 3]);
            assert!(s.score_next_into(&clean, &mut out));
            assert_eq!(out, a);
        }
    }

    #[test]
    fn the_query_vector_and_item_rows_give_the_scores() {
        for (backbone, normalize, temperature) in [
            (Backbone::SasRec, true, None),
            (Backbone::SasRec, false, Some(0.5)),
            (Backbone::Gru4Rec, true, None),
            (Backbone::Gru4Rec, false, Some(2.0)),
        ] {
            // dim 7: whole quads and a remainder
            let cfg = config(backbone, 30, 7, 6, 1, 1, normalize, temperature);
            let s = Scorer::from_model(&random_model(cfg, 41)).unwrap();
            let history = [3u32, 9, 27, 1];
            let scores = s.score_next(&history).unwrap();
            let q = s.query_vector(&history).unwrap();
            assert_eq!(q.len(), 7);
            let tokens: Vec<u32> = (0..=31).collect();
            let some = s.score_tokens(&q, &tokens);
            // bit for bit what the full ranking gives; 0 and 31 are not items
            assert_eq!(some[1..=30], scores[1..=30]);
            assert_eq!((some[0], some[31]), (f32::NEG_INFINITY, f32::NEG_INFINITY));
            for t in 1..=30u32 {
                let row = s.item_row(t).unwrap();
                let dot: f64 = q.iter().zip(row).map(|(&a, &b)| a as f64 * b as f64).sum();
                assert!((dot - scores[t as usize] as f64).abs() < 1e-5);
                if normalize {
                    let norm: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-5);
                }
            }
            assert!(s.item_row(0).is_none() && s.item_row(31).is_none());
            assert!(s.query_vector(&[0, 40]).is_none());
        }
    }

    #[test]
    fn similar_is_the_cosine_of_raw_item_rows() {
        for normalize in [true, false] {
            let cfg = config(Backbone::SasRec, 25, 8, 5, 1, 1, normalize, None);
            let m = random_model(cfg, 11);
            // a zero row must score 0 (and never NaN)
            let mut raw = m.item.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            raw[7 * 8..8 * 8].iter_mut().for_each(|v| *v = 0.0);
            m.item.set(&Tensor::from_vec(raw.clone(), (26, 8), &Device::Cpu).unwrap()).unwrap();
            let s = Scorer::from_model(&m).unwrap();
            let row = |i: usize| &raw[i * 8..(i + 1) * 8];
            let norm = |i: usize| row(i).iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            for token in [1u32, 7, 13, 25] {
                let sim = s.similar(token).unwrap();
                assert_eq!(sim.len(), 26);
                assert_eq!(sim[0], f32::NEG_INFINITY);
                assert_eq!(sim[token as usize], f32::NEG_INFINITY);
                for j in (1..=25).filter(|&j| j != token as usize) {
                    let t = token as usize;
                    let dot: f64 = row(t).iter().zip(row(j)).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let want = if norm(t) == 0.0 || norm(j) == 0.0 { 0.0 } else { dot / (norm(t) * norm(j)) };
                    assert!((sim[j] as f64 - want).abs() < 1e-5, "cos({token}, {j}) = {} vs {want}", sim[j]);
                }
            }
            assert!(s.similar(7).unwrap().iter().skip(1).all(|&v| v == 0.0 || v == f32::NEG_INFINITY));
            // a few tokens score exactly as in the whole ranking
            for token in [1u32, 7, 13, 25] {
                let all: Vec<u32> = (0..=27).collect();
                let some = s.similar_tokens(token, &all).unwrap();
                assert_eq!(some[..26], s.similar(token).unwrap()[..]);
                assert_eq!((some[0], some[26], some[27]), (f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY));
            }
            assert!(s.similar_tokens(0, &[1]).is_none() && s.similar_tokens(26, &[1]).is_none());
            assert!(s.similar(0).is_none());
            assert!(s.similar(26).is_none());
        }
    }
    #[test]
    fn accessors_and_memory() {
        let cfg = config(Backbone::SasRec, 50, 8, 10, 2, 2, false, None);
        let s = Scorer::from_model(&random_model(cfg.clone(), 2)).unwrap();
        assert_eq!(s.config(), &cfg);
        assert_eq!(s.n_items(), 50);
        // the table, the unit rows (an unnormalised model keeps both), the positions
        assert!(s.memory_bytes() >= (2 * 51 * 8 + 10 * 8) * 4);
        let normalised = Scorer::from_model(&random_model(ModelConfig { normalize: true, ..cfg }, 2)).unwrap();
        assert!(normalised.memory_bytes() < s.memory_bytes());
    }
}
