//! An inference-only copy of a trained [`Recommender`] for scoring one
//! sequence at a time inside a database backend: the weights as plain f32
//! vectors, the item table as the model uses it, and a forward pass of
//! plain loops and single-threaded block products (`kernels::gemm` with no
//! parallelism). No candle op and no thread pool runs at scoring time: a
//! backend must never start threads, and candle's per-op overhead would
//! dominate a single sequence anyway.
//!
//! The result equals `Recommender::score_last` on the history left-padded
//! to `max_len` up to f32 rounding (GELU's erf is our own vectorisable fit,
//! within 2 ulp of the libm erff the model uses), while doing less work:
//! - SASRec runs the real tokens only (n rows at positions max_len−n..): a
//!   real query never attends to padding keys, so padding rows cannot change
//!   it; the last block computes queries, FFN and output for the last row
//!   only, and causal attention skips the blocks above the diagonal.
//! - GRU4Rec's padding steps (zero input rows) do change the state, but
//!   the same way for every history: the states after k padding steps are
//!   computed once in [`Scorer::from_model`], and a history of n tokens
//!   starts from the one after max_len − n steps.

use std::cell::RefCell;

use candle_core::{DType, Result, Var};

use crate::kernels::{exp_f32, gemm, with_simd, Mat};
use crate::model::{Encoder, ModelConfig, Recommender, LN_EPS};

/// Query rows per block of causal attention: a block's scores span only
/// the keys up to its last row, which skips most of the masked half.
const QUERY_BLOCK: usize = 32;

/// A linear layer x·wᵀ + b with w (out × in) stored transposed, in × out:
/// gemm's kernels then read it as it is, without packing a copy per call.
struct Dense {
    wt: Vec<f32>,
    b: Vec<f32>,
}

impl Dense {
    fn out(&self) -> usize {
        self.b.len()
    }

    /// wᵀ from column `from` on
    fn cols(&self, from: usize) -> Mat<'_, f32> {
        Mat { data: &self.wt[from..], rs: self.out(), cs: 1 }
    }
}

/// A weight and a bias as the model stores them (layer norms, and k's
/// projection).
struct Affine {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    ln1: Affine,
    /// the q and v projections side by side (wᵀ is d × 2d): one product
    /// gives both
    qv: Dense,
    /// k's projection as stored (w out × in): kᵀ = w·yᵀ is computed
    /// directly, the layout the attention scores' product reads fastest
    k: Affine,
    o: Dense,
    ln2: Affine,
    ff1: Dense,
    ff2: Dense,
}

enum Weights {
    SasRec {
        /// max_len × d learned positions
        pos: Vec<f32>,
        layers: Vec<Layer>,
        ln_final: Affine,
    },
    Gru4Rec {
        /// x·W_ihᵀ + b, 3d gates (r, z, n)
        input: Dense,
        /// the hidden weights transposed (d × 3d): the step's product is then
        /// a sum of rows, which vectorises without horizontal sums
        hidden_t: Vec<f32>,
        hidden_b: Vec<f32>,
        /// max_len × d: row k is the state after k padding steps
        padded: Vec<f32>,
    },
}

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

/// A parameter's values as f32, checked to hold `len` of them.
fn values(v: &Var, len: usize, name: &str) -> Result<Vec<f32>> {
    let values = v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if values.len() != len {
        candle_core::bail!("{name} has {} values, expected {len}", values.len());
    }
    Ok(values)
}

fn dense((w, b): &(Var, Var), out: usize, inp: usize, name: &str) -> Result<Dense> {
    Ok(Dense { wt: transpose(&values(w, out * inp, name)?, inp), b: values(b, out, name)? })
}

fn affine((w, b): &(Var, Var), d: usize, name: &str) -> Result<Affine> {
    Ok(Affine { w: values(w, d, name)?, b: values(b, d, name)? })
}

/// Rows normalised as the model's item table does, e / sqrt(‖e‖² + 1e-24)
/// (so zero rows stay zero), row 0 zeroed.
fn normalised_rows(raw: &[f32], d: usize) -> Vec<f32> {
    let mut rows = raw.to_vec();
    rows[..d].iter_mut().for_each(|v| *v = 0.0);
    for row in rows.chunks_mut(d).skip(1) {
        let n = (row.iter().map(|&v| v * v).sum::<f32>() + 1e-24).sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    rows
}

/// Lanes of the row reductions below (layer norm, softmax): independent
/// partial results the compiler keeps in a vector register; a sequential
/// sum of a row is one long dependency chain (the layer norm's sums took
/// more than half of its time).
const LANES: usize = 16;

/// Combines lanes pairwise (log2(LANES) vector steps, not LANES scalar ones).
#[inline(always)]
fn tree(mut s: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            s[k] = f(s[k], s[k + w]);
        }
    }
    s[0]
}

/// Σ f(v) over a row.
#[inline(always)]
fn sum_lanes(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut s = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            s[k] += f(c[k]);
        }
    }
    let tail = chunks.remainder().iter().fold(0.0, |a, &v| a + f(v));
    tree(s, |a, b| a + b) + tail
}

/// Softmax of scale·v over row[..len] in place, as ops::attention's
/// weights (max-shifted exponentials; exp(scale·v − scale·max) has the
/// same arguments, as rounding is monotone); the rest of the row (whole
/// lanes) ends 0.
#[inline(always)]
fn softmax(row: &mut [f32], len: usize, scale: f32) {
    row[len..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
    let mut m = [f32::NEG_INFINITY; LANES];
    for c in row.chunks_exact(LANES) {
        for k in 0..LANES {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    let max = tree(m, f32::max) * scale;
    let mut s = [0.0f32; LANES];
    for c in row.chunks_exact_mut(LANES) {
        for k in 0..LANES {
            c[k] = exp_f32(c[k] * scale - max);
            s[k] += c[k];
        }
    }
    let inv = 1.0 / tree(s, |a, b| a + b);
    row[..len].iter_mut().for_each(|v| *v *= inv);
}

/// The transpose of a matrix of d-wide rows.
fn transpose(rows: &[f32], d: usize) -> Vec<f32> {
    let m = rows.len() / d;
    let mut t = vec![0.0; rows.len()];
    for (i, row) in rows.chunks_exact(d).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            t[k * m + i] = v;
        }
    }
    t
}

/// Layer norm of each d-wide row of `x` into `out`: ops::layer_norm's
/// formula (biased variance, eps inside the root), with sums by lanes.
#[inline(always)]
fn layer_norm(x: &[f32], norm: &Affine, out: &mut [f32]) {
    let d = norm.w.len();
    let dn = d as f32;
    for (o, row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean = sum_lanes(row, |v| v) / dn;
        let var = sum_lanes(row, |v| (v - mean) * (v - mean)) / dn;
        // one division per row, not per value (within an ulp of dividing)
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(&norm.w).zip(&norm.b) {
            *o = (v - mean) * inv * w + b;
        }
    }
}

/// dst (m × out, row stride `rs`) = x (m × in) · wt (in × out), without the bias.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn product(dst: &mut [f32], rs: usize, m: usize, x: &[f32], inp: usize, wt: Mat<f32>, out: usize) {
    gemm(dst, rs, m, out, inp, Mat::rows(x, inp), wt, false);
}

/// x += y + b row by row (the model adds the bias, then the residual).
#[inline(always)]
fn add_residual(x: &mut [f32], y: &[f32], b: &[f32]) {
    let d = b.len();
    for (x, y) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
        for ((x, &y), &b) in x.iter_mut().zip(y).zip(b) {
            *x += y + b;
        }
    }
}

/// erf(x) without branches or calls, so GELU's loop vectorises (libm's
/// erff, which the model uses, is a branchy call per value and was the
/// largest single cost of a pass). Our own Chebyshev fits (mpmath, 40
/// digits): erf(x)/x as a polynomial in x² on |x| ≤ 1 (fit error 1.2e-9),
/// and erfc(x)·exp(x²) as a polynomial in 1/x on 1 ≤ |x| ≤ 4 (4.7e-9;
/// beyond 3.92 erf rounds to ±1 in f32). Within 2e-7 of libm's erff (test).
#[inline(always)]
fn erf(x: f32) -> f32 {
    // highest degree first
    const SMALL: [f64; 7] = [
        7.875_875_062_685_488e-5,
        -8.016_864_287_165_87e-4,
        5.189_087_423_433_974e-3,
        -2.685_421_201_062_641e-2,
        0.112_835_947_151_602_18,
        -0.376_126_266_667_203_3,
        1.128_379_165_848_351,
    ];
    // in v = (1/|x| − 5/8)·8/3, which maps 1/|x| ∈ [1/4, 1] to [−1, 1]
    const LARGE: [f64; 10] = [
        3.671_016_898_308_552e-6,
        -2.772_810_670_550_983_5e-6,
        -2.775_028_240_125_302e-5,
        1.241_966_191_449_717_2e-4,
        -3.483_616_161_278_017e-4,
        4.599_445_172_602_164e-4,
        2.308_089_708_172_659e-3,
        -2.424_283_655_522_938_6e-2,
        0.143_356_409_313_548_7,
        0.305_952_988_794_230_9,
    ];
    let a = x.abs();
    let u = a * a;
    let small = a * SMALL[1..].iter().fold(SMALL[0] as f32, |p, &c| p * u + c as f32);
    let b = a.clamp(1.0, 4.0);
    let v = (1.0 / b) * (8.0 / 3.0) - 5.0 / 3.0;
    let q = LARGE[1..].iter().fold(LARGE[0] as f32, |p, &c| p * v + c as f32);
    let large = 1.0 - exp_f32(-(b * b)) * q;
    (if a <= 1.0 { small } else { large }).copysign(x)
}

/// GELU 0.5·x·(1 + erf(x/√2)) of v + b, as ops::gelu_erf after a linear layer.
#[inline(always)]
fn bias_gelu(u: &mut [f32], b: &[f32]) {
    let frac = std::f64::consts::FRAC_1_SQRT_2 as f32;
    for row in u.chunks_exact_mut(b.len()) {
        for (v, &b) in row.iter_mut().zip(b) {
            let x = *v + b;
            *v = (erf(x * frac) + 1.0) * 0.5 * x;
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (exp_f32(-x) + 1.0)
}

/// tanh from the vectorisable exp (absolute error below 3e-7).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

/// Columns of h·W_hhᵀ per block of a GRU step: two accumulators of this
/// many values (8 vector registers) stay in registers over the whole sum,
/// where a sum over all 3d columns would load and store them for every
/// term (and wait on its own stores).
const GRU_BLOCK: usize = 64;

/// gh = h·W_hhᵀ + b from wᵀ (d × 3d).
#[inline(always)]
fn gru_hidden(h: &[f32], hidden_t: &[f32], hidden_b: &[f32], gh: &mut [f32]) {
    let w3 = gh.len();
    let mut from = 0;
    for g in gh.chunks_exact_mut(GRU_BLOCK) {
        // even and odd terms in separate accumulators: two dependency chains
        let (mut even, mut odd) = ([0.0f32; GRU_BLOCK], [0.0f32; GRU_BLOCK]);
        let mut rows = h.chunks_exact(2).zip(hidden_t.chunks_exact(2 * w3));
        for (hk, rows) in &mut rows {
            let (r0, r1) = (&rows[from..from + GRU_BLOCK], &rows[w3 + from..w3 + from + GRU_BLOCK]);
            for j in 0..GRU_BLOCK {
                even[j] += hk[0] * r0[j];
                odd[j] += hk[1] * r1[j];
            }
        }
        if h.len() % 2 == 1 {
            let (hk, row) = (h[h.len() - 1], &hidden_t[(h.len() - 1) * w3..]);
            for j in 0..GRU_BLOCK {
                even[j] += hk * row[from + j];
            }
        }
        for (j, g) in g.iter_mut().enumerate() {
            *g = even[j] + odd[j] + hidden_b[from + j];
        }
        from += GRU_BLOCK;
    }
    // the columns after the last whole block
    let g = &mut gh[from..];
    g.iter_mut().zip(&hidden_b[from..]).for_each(|(g, &b)| *g = b);
    for (&hk, row) in h.iter().zip(hidden_t.chunks_exact(w3)) {
        g.iter_mut().zip(&row[from..]).for_each(|(g, &w)| *g += hk * w);
    }
}

/// One GRU step (PyTorch's equations, gates r, z, n) from the input gates
/// `gi` (3d, bias included); `gh` is 3d of scratch.
#[inline(always)]
fn gru_step(h: &mut [f32], gi: &[f32], hidden_t: &[f32], hidden_b: &[f32], gh: &mut [f32]) {
    let d = h.len();
    gru_hidden(h, hidden_t, hidden_b, gh);
    let (gh_r, rest) = gh.split_at(d);
    let (gh_z, gh_n) = rest.split_at(d);
    let (gi_r, rest) = gi.split_at(d);
    let (gi_z, gi_n) = rest.split_at(d);
    let gates = gi_r.iter().zip(gh_r).zip(gi_z.iter().zip(gh_z)).zip(gi_n.iter().zip(gh_n));
    for (h, (((&ir, &hr), (&iz, &hz)), (&i_n, &hn))) in h.iter_mut().zip(gates) {
        let r = sigmoid(ir + hr);
        let z = sigmoid(iz + hz);
        let n = tanh(i_n + r * hn);
        *h = (1.0 - z) * n + z * *h;
    }
}

impl Scorer {
    /// Copies the weights of a trained model (any dtype) as f32.
    pub fn from_model(model: &Recommender) -> Result<Self> {
        let config = model.config.clone();
        let (n, d, max_len) = (config.n_items, config.dim, config.max_len);
        if d == 0 {
            candle_core::bail!("a model of dimension 0");
        }
        let raw = values(&model.item, (n + 1) * d, "item")?;
        let unit = normalised_rows(&raw, d);
        let (table, unit_t) = if config.normalize {
            (unit, None)
        } else {
            let mut table = raw;
            table[..d].iter_mut().for_each(|v| *v = 0.0);
            (table, Some(transpose(&unit, d)))
        };
        let table_t = transpose(&table, d);
        let mut logit_scale = None;
        let weights = match &model.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                let heads = config.heads;
                if heads == 0 || d % heads != 0 {
                    candle_core::bail!("dim {d} is not divisible by heads {heads}");
                }
                let pos = values(pos, max_len * d, "pos")?;
                let mut layers = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    let name = |part: &str| format!("blocks.{i}.{part}");
                    let (q, k, v) = (
                        dense(&b.q, d, d, &name("q"))?,
                        dense(&b.k, d, d, &name("k"))?,
                        dense(&b.v, d, d, &name("v"))?,
                    );
                    // row i of wᵀ: q's and v's weights of input i, side by side
                    let mut wt = Vec::with_capacity(2 * d * d);
                    for i in 0..d {
                        wt.extend_from_slice(&q.wt[i * d..(i + 1) * d]);
                        wt.extend_from_slice(&v.wt[i * d..(i + 1) * d]);
                    }
                    let qv = Dense { wt, b: [q.b, v.b].concat() };
                    layers.push(Layer {
                        ln1: affine(&b.ln1, d, &name("ln1"))?,
                        qv,
                        k: Affine { w: transpose(&k.wt, d), b: k.b },
                        o: dense(&b.o, d, d, &name("o"))?,
                        ln2: affine(&b.ln2, d, &name("ln2"))?,
                        ff1: dense(&b.ff1, d, d, &name("ff1"))?,
                        ff2: dense(&b.ff2, d, d, &name("ff2"))?,
                    });
                }
                Weights::SasRec { pos, layers, ln_final: affine(ln_final, d, "ln_final")? }
            }
            Encoder::Gru4Rec { gru, logit_scale: scale } => {
                if let Some(s) = scale {
                    logit_scale = Some(values(s, 1, "logit_scale")?[0]);
                }
                let input = dense(&gru.input, 3 * d, d, "gru.input")?;
                let hidden = dense(&gru.hidden, 3 * d, d, "gru.hidden")?;
                // a padding step's input row is zero: its input gates are the bias alone
                let mut padded = vec![0.0; max_len * d];
                let (mut h, mut gh) = (vec![0.0; d], vec![0.0; 3 * d]);
                for row in padded.chunks_exact_mut(d).skip(1) {
                    gru_step(&mut h, &input.b, &hidden.wt, &hidden.b, &mut gh);
                    row.copy_from_slice(&h);
                }
                Weights::Gru4Rec { input, hidden_t: hidden.wt, hidden_b: hidden.b, padded }
            }
        };
        let inv_temperature = config.temperature.map(|t| (1.0 / t) as f32);
        Ok(Self { config, table, table_t, unit_t, weights, logit_scale, inv_temperature })
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
        let floats = |v: &Vec<f32>| v.capacity() * std::mem::size_of::<f32>();
        let dense = |x: &Dense| floats(&x.wt) + floats(&x.b);
        let norm = |x: &Affine| floats(&x.w) + floats(&x.b);
        let weights = match &self.weights {
            Weights::SasRec { pos, layers, ln_final } => {
                floats(pos)
                    + norm(ln_final)
                    + layers
                        .iter()
                        .map(|l| {
                            norm(&l.ln1)
                                + dense(&l.qv)
                                + norm(&l.k)
                                + dense(&l.o)
                                + norm(&l.ln2)
                                + dense(&l.ff1)
                                + dense(&l.ff2)
                                + std::mem::size_of::<Layer>()
                        })
                        .sum::<usize>()
            }
            Weights::Gru4Rec { input, hidden_t, hidden_b, padded } => {
                dense(input) + floats(hidden_t) + floats(hidden_b) + floats(padded)
            }
        };
        let tables = floats(&self.table) + floats(&self.table_t) + self.unit_t.as_ref().map_or(0, floats);
        std::mem::size_of::<Self>() + tables + weights
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
        if !self.hidden(history, h) {
            return false;
        }
        if let Some(s) = self.logit_scale {
            h.iter_mut().for_each(|v| *v *= s);
        }
        if let Some(s) = self.inv_temperature {
            h.iter_mut().for_each(|v| *v *= s);
        }
        self.dot_cols(&self.table_t, h, out);
        true
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
        with_simd(
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
        let n_items = self.config.n_items as u64;
        let tokens = history[start..].iter().map(|&t| t as usize).filter(|&t| (1..=n_items).contains(&(t as u64)));
        match &self.weights {
            Weights::SasRec { pos, layers, ln_final } => self.sasrec(tokens, n, pos, layers, ln_final, h),
            Weights::Gru4Rec { input, hidden_t, hidden_b, padded } => {
                self.gru4rec(tokens, n, input, hidden_t, hidden_b, padded, h)
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn gru4rec(
        &self,
        tokens: impl Iterator<Item = usize>,
        n: usize,
        input: &Dense,
        hidden_t: &[f32],
        hidden_b: &[f32],
        padded: &[f32],
        h: &mut [f32],
    ) {
        let (d, max_len) = (self.config.dim, self.config.max_len);
        with_scratch(n * d + n * 3 * d + 3 * d, |buf| {
            let (x, rest) = buf.split_at_mut(n * d);
            let (gi, gh) = rest.split_at_mut(n * 3 * d);
            for (row, t) in x.chunks_exact_mut(d).zip(tokens) {
                row.copy_from_slice(&self.table[t * d..(t + 1) * d]);
            }
            with_simd(
                #[inline(always)]
                || {
                    // every step's input gates in one product
                    product(gi, 3 * d, n, x, d, input.cols(0), 3 * d);
                    for row in gi.chunks_exact_mut(3 * d) {
                        row.iter_mut().zip(&input.b).for_each(|(v, &b)| *v += b);
                    }
                    let k = max_len - n;
                    h.copy_from_slice(&padded[k * d..(k + 1) * d]);
                    for gi in gi.chunks_exact(3 * d) {
                        gru_step(h, gi, hidden_t, hidden_b, gh);
                    }
                },
            )
        })
    }

    fn sasrec(
        &self,
        tokens: impl Iterator<Item = usize>,
        n: usize,
        pos: &[f32],
        layers: &[Layer],
        ln_final: &Affine,
        h: &mut [f32],
    ) {
        let (d, max_len) = (self.config.dim, self.config.max_len);
        let nd = n * d;
        with_scratch(7 * nd + QUERY_BLOCK * n.next_multiple_of(LANES), |buf| {
            let (x, rest) = buf.split_at_mut(nd);
            let (y, rest) = rest.split_at_mut(nd);
            let (qv, rest) = rest.split_at_mut(2 * nd);
            let (kt, rest) = rest.split_at_mut(nd);
            let (ctx, rest) = rest.split_at_mut(nd);
            let (f, s) = rest.split_at_mut(nd);
            // item rows plus the absolute positions of the last n slots (left padding)
            let first = max_len - n;
            for (r, (row, t)) in x.chunks_exact_mut(d).zip(tokens).enumerate() {
                let (e, p) = (&self.table[t * d..(t + 1) * d], &pos[(first + r) * d..(first + r + 1) * d]);
                row.iter_mut().zip(e).zip(p).for_each(|((o, &e), &p)| *o = e + p);
            }
            with_simd(
                #[inline(always)]
                || {
                    for (i, layer) in layers.iter().enumerate() {
                        // the last block's output is needed for the last row only
                        let q0 = if i + 1 == layers.len() { n - 1 } else { 0 };
                        self.block(layer, n, q0, x, y, qv, kt, ctx, f, s);
                    }
                    layer_norm(&x[(n - 1) * d..], ln_final, h);
                },
            )
        })
    }

    /// One pre-norm block over the n real rows of `x`, updating rows q0..n
    /// (keys and values come from every row).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn block(
        &self,
        layer: &Layer,
        n: usize,
        q0: usize,
        x: &mut [f32],
        y: &mut [f32],
        qv: &mut [f32],
        kt: &mut [f32],
        ctx: &mut [f32],
        f: &mut [f32],
        s: &mut [f32],
    ) {
        let (d, heads) = (self.config.dim, self.config.heads);
        let (dh, w2) = (d / heads, 2 * d);
        let m = n - q0;
        layer_norm(x, &layer.ln1, y);
        // v for every row, q for the query rows (n × 2d, q then v)
        if q0 == 0 {
            product(qv, w2, n, y, d, layer.qv.cols(0), w2);
        } else {
            product(&mut qv[d..], w2, n, y, d, layer.qv.cols(d), d);
            product(&mut qv[q0 * w2..], w2, m, &y[q0 * d..], d, layer.qv.cols(0), d);
        }
        for (r, row) in qv.chunks_exact_mut(w2).enumerate() {
            let from = if r >= q0 { 0 } else { d };
            row[from..].iter_mut().zip(&layer.qv.b[from..]).for_each(|(v, &b)| *v += b);
        }
        // kᵀ (d × n) for every row
        gemm(kt, n, d, n, d, Mat::rows(&layer.k.w, d), Mat::transposed(y, d), false);
        for (row, &b) in kt.chunks_exact_mut(n).zip(&layer.k.b) {
            row.iter_mut().for_each(|v| *v += b);
        }
        // softmax(q kᵀ / sqrt(dh)) v per head over keys 0..=i (all real)
        let scale = (1.0 / (dh as f64).sqrt()) as f32;
        // rows of whole lanes: the keys past i up to a lane boundary are set
        // to −∞ (weight 0), so the exponentials need no scalar tail
        let stride = n.next_multiple_of(LANES);
        for hd in 0..heads {
            let mut r0 = q0;
            while r0 < n {
                let r1 = (r0 + QUERY_BLOCK).min(n);
                let bm = r1 - r0;
                let q = Mat { data: &qv[r0 * w2 + hd * dh..], rs: w2, cs: 1 };
                let k = Mat { data: &kt[hd * dh * n..], rs: n, cs: 1 };
                gemm(s, stride, bm, r1, dh, q, k, false);
                for (a, row) in s.chunks_exact_mut(stride).take(bm).enumerate() {
                    let len = r0 + a + 1;
                    let whole = len.next_multiple_of(LANES);
                    softmax(&mut row[..whole], len, scale);
                    row[whole.min(r1)..r1].iter_mut().for_each(|v| *v = 0.0);
                }
                let v = Mat { data: &qv[d + hd * dh..], rs: w2, cs: 1 };
                let p = Mat { data: s, rs: stride, cs: 1 };
                gemm(&mut ctx[r0 * d + hd * dh..], d, bm, dh, r1, p, v, false);
                r0 = r1;
            }
        }
        let (x, y, ctx) = (&mut x[q0 * d..], &mut y[q0 * d..], &mut ctx[q0 * d..]);
        let f = &mut f[..m * d];
        product(f, d, m, ctx, d, layer.o.cols(0), d);
        add_residual(x, f, &layer.o.b);
        layer_norm(x, &layer.ln2, y);
        let u = &mut ctx[..m * d];
        product(u, d, m, y, d, layer.ff1.cols(0), d);
        bias_gelu(u, &layer.ff1.b);
        product(f, d, m, u, d, layer.ff2.cols(0), d);
        add_residual(x, f, &layer.ff2.b);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

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
            assert!(s.similar(0).is_none());
            assert!(s.similar(26).is_none());
        }
    }

    #[test]
    fn erf_is_libms_to_f32_precision() {
        let (mut worst_exact, mut worst_libm) = (0.0f64, 0.0f64);
        let mut x = -7.0f32;
        while x < 7.0 {
            let ours = erf(x) as f64;
            worst_exact = worst_exact.max((ours - candle_core::cpu::erf::erf_f64(x as f64)).abs());
            worst_libm = worst_libm.max((ours - candle_core::cpu::erf::erf_f32(x) as f64).abs());
            x += 1.17e-4;
        }
        assert!(worst_exact < 1.5e-7 && worst_libm < 2e-7, "erf off by {worst_exact} (libm: {worst_libm})");
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.842_700_8), (-1.0, -0.842_700_8), (10.0, 1.0), (f32::INFINITY, 1.0)]
        {
            assert!((erf(x) - want).abs() < 1e-7, "erf({x}) = {}", erf(x));
        }
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
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
