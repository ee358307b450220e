//! SASRec's pass over the real tokens of a history: pre-norm blocks of
//! causal self-attention and a GELU feed-forward, as the model's forward
//! pass computes them (same formulas, f32), with queries, FFN and output
//! of the last block for the last row only.

use super::weights::{product, Affine, Layer};
use super::{with_scratch, Scorer};
use crate::kernels::{dispatch, exp_in_place_lanes, gelu, gemm, layer_norm_row, max_lanes, Mat, LANES};
use crate::model::LN_EPS;

/// Query rows per block of causal attention: a block's scores span only
/// the keys up to its last row, which skips most of the masked half.
const QUERY_BLOCK: usize = 32;

/// Softmax of scale·v over row[..len] in place, as ops::attention's
/// weights (max-shifted exponentials; exp(scale·v − scale·max) has the
/// same arguments, as rounding is monotone); `row` is whole lanes, and the
/// rest of it past `len` ends 0.
#[inline(always)]
fn softmax(row: &mut [f32], len: usize, scale: f32) {
    row[len..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
    let max = max_lanes(row) * scale;
    let inv = 1.0 / exp_in_place_lanes(row, scale, max);
    row[..len].iter_mut().for_each(|v| *v *= inv);
}

/// Layer norm of each d-wide row of `x` into `out`: ops::layer_norm's
/// formula (biased variance, eps inside the root).
#[inline(always)]
fn layer_norm(x: &[f32], norm: &Affine, out: &mut [f32]) {
    let d = norm.w.len();
    for (o, row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        layer_norm_row(row, &norm.w, &norm.b, LN_EPS, o);
    }
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

/// GELU 0.5·x·(1 + erf(x/√2)) of v + b, as ops::gelu_erf after a linear layer.
#[inline(always)]
fn bias_gelu(u: &mut [f32], b: &[f32]) {
    for row in u.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(v, &b)| *v = gelu(*v + b));
    }
}

impl Scorer {
    /// The representation after the n history rows `rows` (item rows as
    /// the model uses them, oldest first; the final layer norm of the last
    /// row) into `h` (d values).
    pub(super) fn sasrec<'r>(
        &self,
        rows: impl Iterator<Item = &'r [f32]>,
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
            for (r, (row, e)) in x.chunks_exact_mut(d).zip(rows).enumerate() {
                let p = &pos[(first + r) * d..(first + r + 1) * d];
                row.iter_mut().zip(e).zip(p).for_each(|((o, &e), &p)| *o = e + p);
            }
            dispatch(
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
