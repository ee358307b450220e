//! GRU4Rec's pass: one GRU layer (PyTorch's equations) over the history's
//! item rows, from the state after the padding steps that precede them.

use super::weights::{product, Dense};
use super::{with_scratch, Scorer};
use crate::kernels::{dispatch, sigmoid, tanh};

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

/// max_len × d: row k is the state after k padding steps (zero input rows,
/// so the input gates are the bias alone); row 0 is the zero initial state.
pub(super) fn padded_states(input: &Dense, hidden: &Dense, max_len: usize) -> Vec<f32> {
    let d = input.out() / 3;
    let mut padded = vec![0.0; max_len * d];
    let (mut h, mut gh) = (vec![0.0; d], vec![0.0; 3 * d]);
    for row in padded.chunks_exact_mut(d).skip(1) {
        gru_step(&mut h, &input.b, &hidden.wt, &hidden.b, &mut gh);
        row.copy_from_slice(&h);
    }
    padded
}

impl Scorer {
    /// The state after the n history rows `rows` (item rows as the model
    /// uses them, oldest first) into `h` (d values).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gru4rec<'r>(
        &self,
        rows: impl Iterator<Item = &'r [f32]>,
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
            for (row, e) in x.chunks_exact_mut(d).zip(rows) {
                row.copy_from_slice(e);
            }
            dispatch(
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
}
