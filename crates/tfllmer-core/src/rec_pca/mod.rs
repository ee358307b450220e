//! Rec-PCA (METHOD.md, "Component 2"): a PCA of the LLM item embeddings
//! that also penalises total variation over the co-occurrence graph.
//!
//! X = the row-normalised, centred embeddings (N × D). With L = I − Â,
//! maximise tr(Wᵀ XᵀX W) − λ tr(Wᵀ XᵀLX W) = tr(Wᵀ M W) over WᵀW = I, where
//! M = (1−λ)·XᵀX + λ·Xᵀ(ÂX). W holds the eigenvectors of M with the `dim`
//! largest algebraic eigenvalues; the output is Z = XW, row-normalised.
//!
//! Memory: the input is kept as f32 (and overwritten by X, also f32), so
//! the peak is about 4·N·D + 8·N·d + 32·D² + 16·B·D bytes (B = 1024 rows per
//! block) plus 24 bytes per non-zero of Â; all sums are in f64. For N = 1M
//! items of D = 4096 that is about 17 GB; for ML-1M (3,883 × 768) 25 MB.

use std::fmt;

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as triangular_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use sprs::CsMat;

use crate::{parallel, simd};

mod randomized;
pub use randomized::{rec_pca_randomized, BlockFn, Krylov, RowSource};

/// How Rec-PCA finds the eigenvectors (shared/API.md's `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// forms XᵀX and Xᵀ(ÂX) (D × D) over all rows and decomposes M densely;
    /// holds X: memory about 4·N·D + 32·D² bytes
    Exact,
    /// the randomized block Krylov method ([`rec_pca_randomized`]): passes
    /// over the rows, never X whole nor a D × D product over all rows
    Randomized,
}

/// Inputs up to this size (4·N·D + 32·D² bytes, the exact method's
/// memory) use the exact method when `method` is 'auto'.
pub const EXACT_MAX_BYTES: u64 = 1 << 30;

impl Method {
    pub fn parse(name: &str) -> Option<Option<Self>> {
        match name {
            "exact" => Some(Some(Self::Exact)),
            "randomized" => Some(Some(Self::Randomized)),
            "auto" => Some(None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Randomized => "randomized",
        }
    }

    /// 'auto': exact while its memory, 4·N·D + 32·D² bytes, is at most
    /// [`EXACT_MAX_BYTES`], randomized above.
    pub fn auto(n_items: usize, input_dim: usize) -> Self {
        let (n, d) = (n_items as u64, input_dim as u64);
        let bytes = n.saturating_mul(d).saturating_mul(4).saturating_add(d.saturating_mul(d).saturating_mul(32));
        if bytes <= EXACT_MAX_BYTES {
            Self::Exact
        } else {
            Self::Randomized
        }
    }
}

/// Rows per block when accumulating XᵀX and Xᵀ(ÂX).
const BLOCK_ROWS: usize = 1024;

/// Item embeddings, one row per item, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub ids: Vec<i64>,
    pub input_dim: usize,
    pub values: Vec<f32>,
}

impl Embeddings {
    pub fn n_items(&self) -> usize {
        self.ids.len()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.input_dim..(i + 1) * self.input_dim]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecPcaParams {
    pub dim: usize,
    pub lambda: f64,
    /// threads for the sparse product and the two eigendecompositions
    /// (the result does not depend on it)
    pub threads: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RecPcaError {
    Empty,
    Dim {
        dim: i64,
        input_dim: usize,
        n_items: usize,
    },
    Lambda(f64),
    NotFinite {
        item: i64,
    },
    DuplicateItem(i64),
    Ragged {
        item: i64,
        len: usize,
        expected: usize,
    },
    /// the normalised, centred embeddings vary in fewer directions than dim
    Rank {
        rank: usize,
        dim: usize,
        n_items: usize,
    },
    Eigen,
    /// reading the rows failed, or they changed between passes
    Source(String),
}

impl fmt::Display for RecPcaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "there are no item embeddings"),
            Self::Dim { dim, input_dim, n_items } => write!(
                f,
                "dim must be between 1 and min(input dimension {input_dim}, number of items {n_items}), got {dim}"
            ),
            Self::Lambda(l) => write!(f, "lambda must be between 0 and 1, got {l}"),
            Self::NotFinite { item } => write!(f, "the embedding of item {item} has a NaN or infinite value"),
            Self::DuplicateItem(item) => write!(f, "item {item} has more than one embedding"),
            Self::Ragged { item, len, expected } => {
                write!(f, "the embedding of item {item} has {len} values, the others {expected}")
            }
            Self::Rank { rank, dim, n_items } => write!(
                f,
                "the {n_items} embeddings, once scaled to unit length and centred, vary in only {rank} \
                 direction(s), fewer than dim = {dim} (vectors that point the same way are identical after the \
                 scaling)"
            ),
            Self::Eigen => write!(f, "the eigensolver did not converge"),
            Self::Source(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for RecPcaError {}

impl RecPcaParams {
    pub fn new(dim: i64, lambda: f64, input_dim: usize, n_items: usize) -> Result<Self, RecPcaError> {
        if !(0.0..=1.0).contains(&lambda) {
            return Err(RecPcaError::Lambda(lambda));
        }
        if dim < 1 || dim as u64 > input_dim.min(n_items) as u64 {
            return Err(RecPcaError::Dim { dim, input_dim, n_items });
        }
        Ok(Self { dim: dim as usize, lambda, threads: 1 })
    }
}

/// What [`rec_pca`] reports as it goes: a phase name and the fraction done.
pub trait Progress {
    fn report(&mut self, phase: &'static str, done: f64);
}

impl<F: FnMut(&'static str, f64)> Progress for F {
    fn report(&mut self, phase: &'static str, done: f64) {
        self(phase, done)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecPcaOutput {
    /// N × dim, row-normalised, in the input's row order
    pub z: Vec<f32>,
    pub dim: usize,
    /// tr(WᵀXᵀXW) / tr(XᵀX)
    pub retained_variance: f64,
    /// tr(ZᵀLZ) / tr(ZᵀZ) for Z = XW before row normalisation (None without a graph)
    pub graph_tv: Option<f64>,
    /// the same for plain PCA of the same dim
    pub graph_tv_pca: Option<f64>,
    /// the eigenvalues of M that were kept, largest first
    pub eigenvalues: Vec<f64>,
    /// how a new input row maps to its output row (for items that arrive
    /// after Rec-PCA ran: cold-start items)
    pub projection: Projection,
}

/// The map from one input embedding to its Rec-PCA row, fixed by a run:
/// z = normalise((x / ‖x‖ − μ) · W), with μ the mean of the run's
/// unit-length input rows and W its D × dim eigenvectors (module docs).
/// Applied to a row of the run's own input it gives that row's output
/// (up to f32 rounding).
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// μ: D values
    pub mean: Vec<f64>,
    /// W: D × dim, row-major
    pub components: Vec<f64>,
    pub dim: usize,
}

impl Projection {
    /// From μ (D values) and W (D × dim, row-major), as stored.
    pub fn from_parts(mean: Vec<f64>, components: Vec<f64>, dim: usize) -> Self {
        debug_assert_eq!(components.len(), mean.len() * dim);
        Self { mean, components, dim }
    }

    /// From μ (D) and W (D × dim).
    fn new(mean: Vec<f64>, w: MatRef<'_, f64>) -> Self {
        let (d, k) = (w.nrows(), w.ncols());
        let mut components = Vec::with_capacity(d * k);
        for r in 0..d {
            components.extend((0..k).map(|c| w[(r, c)]));
        }
        Self { mean, components, dim: k }
    }

    /// The input width D.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// The output row of one input embedding `x` (D values), unit length;
    /// a zero row after centring stays zero. None when `x` has another
    /// width or a value that is not finite.
    pub fn project(&self, x: &[f32]) -> Option<Vec<f32>> {
        if x.len() != self.input_dim() || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let scale = 1.0 / x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        let mut z = vec![0.0f64; self.dim];
        for ((&v, &m), w) in x.iter().zip(&self.mean).zip(self.components.chunks_exact(self.dim)) {
            let centred = v as f64 * scale - m;
            for (z, &w) in z.iter_mut().zip(w) {
                *z += centred * w;
            }
        }
        let norm = z.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        Some(z.iter().map(|v| (v / norm) as f32).collect())
    }
}

/// Checks an embedding set before the work starts.
pub fn validate(embeddings: &Embeddings) -> Result<(), RecPcaError> {
    if embeddings.ids.is_empty() || embeddings.input_dim == 0 {
        return Err(RecPcaError::Empty);
    }
    for (i, &id) in embeddings.ids.iter().enumerate() {
        if embeddings.row(i).iter().any(|v| !v.is_finite()) {
            return Err(RecPcaError::NotFinite { item: id });
        }
    }
    let mut sorted = embeddings.ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(RecPcaError::DuplicateItem(w[0]));
    }
    Ok(())
}

/// An eigenvalue of S = XᵀX at most this share of tr(S) is no direction
/// of variance: X is stored in f32, whose rounding puts noise eigenvalues
/// near 1e-15·tr(S); real directions are far above 1e-9.
const RANK_TOLERANCE: f64 = 1e-9;

/// Runs Rec-PCA. `adjacency`, when given, is the normalised graph Â over the
/// same rows as `embeddings` (see `CooccurrenceGraph::normalized_adjacency_for`).
/// The embedding values are overwritten by X (normalised, centred).
pub fn rec_pca(
    mut embeddings: Embeddings,
    adjacency: Option<&CsMat<f64>>,
    params: RecPcaParams,
    progress: &mut impl Progress,
) -> Result<RecPcaOutput, RecPcaError> {
    validate(&embeddings)?;
    let n = embeddings.n_items();
    let d_in = embeddings.input_dim;
    let dim = params.dim;

    progress.report("normalising", 0.0);
    let mean = normalise_and_centre(&mut embeddings);
    let x = &embeddings.values;

    // S = XᵀX and G = Xᵀ(ÂX), accumulated over blocks of rows; with several
    // threads each takes a contiguous share of the rows and its own sums,
    // added in a fixed order at the end
    let parts = params.threads.clamp(1, n.div_ceil(BLOCK_ROWS));
    let share = n.div_ceil(parts);
    let range = |p: usize| (p * share).min(n)..((p + 1) * share).min(n);
    let mut sums = parallel::run_parts(
        parts,
        || accumulate(x, d_in, adjacency, range(0), &mut |done| progress.report("accumulating", done)),
        |p| accumulate(x, d_in, adjacency, range(p), &mut |_| {}),
    )
    .into_iter();
    let (mut s, mut g) = sums.next().unwrap_or_else(|| (Mat::zeros(d_in, d_in), None));
    for (s_part, g_part) in sums {
        s += s_part;
        if let (Some(g), Some(g_part)) = (g.as_mut(), g_part) {
            *g += g_part;
        }
    }

    progress.report("eigendecomposition", 0.0);
    let m = match &g {
        None => symmetrised(s.as_ref(), None, 0.0),
        Some(g) => symmetrised(s.as_ref(), Some(g.as_ref()), params.lambda),
    };
    let s = symmetrised(s.as_ref(), None, 0.0);
    // plain PCA (for graph_tv_pca) needs S's own eigenvectors: computed
    // alongside M's when there is a second thread
    let needs_pca = g.is_some() && params.lambda != 0.0;
    let (pca, rec) = parallel::join(
        if needs_pca { params.threads } else { 1 },
        || if needs_pca { Some(top_eigenvectors(s.as_ref(), dim)) } else { None },
        || top_eigenvectors(m.as_ref(), dim),
    );
    let (w, eigenvalues) = rec?;
    let pca = pca.transpose()?;

    let total = trace(s.as_ref());
    // S's largest eigenvalues: the directions of variance X has (with no
    // graph term M is S itself)
    let variances = pca.as_ref().map_or(&eigenvalues, |(_, v)| v);
    let rank = variances.iter().filter(|&&v| v > RANK_TOLERANCE * total).count();
    if rank < dim {
        return Err(RecPcaError::Rank { rank, dim, n_items: n });
    }
    let kept = quadratic_trace(s.as_ref(), w.as_ref());
    let retained_variance = if total > 0.0 { kept / total } else { 0.0 };
    let (graph_tv, graph_tv_pca) = match &g {
        None => (None, None),
        Some(g) => {
            let g = symmetrised(g.as_ref(), None, 0.0);
            let tv = |w: MatRef<'_, f64>| {
                let zz = quadratic_trace(s.as_ref(), w);
                if zz > 0.0 {
                    1.0 - quadratic_trace(g.as_ref(), w) / zz
                } else {
                    0.0
                }
            };
            let pca_tv = match &pca {
                Some((pca, _)) => tv(pca.as_ref()),
                None => tv(w.as_ref()),
            };
            (Some(tv(w.as_ref())), Some(pca_tv))
        }
    };

    progress.report("projecting", 0.0);
    let z = project(x, n, d_in, w.as_ref());
    progress.report("done", 1.0);
    let projection = Projection::new(mean, w.as_ref());
    Ok(RecPcaOutput { z, dim, retained_variance, graph_tv, graph_tv_pca, eigenvalues, projection })
}

/// The lower triangles of XᵀX and, with a graph, Xᵀ(ÂX) over the given rows
/// of X; `done` hears the fraction of those rows finished.
fn accumulate(
    x: &[f32],
    d_in: usize,
    adjacency: Option<&CsMat<f64>>,
    rows: std::ops::Range<usize>,
    done: &mut dyn FnMut(f64),
) -> (Mat<f64>, Option<Mat<f64>>) {
    let mut s = Mat::<f64>::zeros(d_in, d_in);
    let mut g = adjacency.map(|_| Mat::<f64>::zeros(d_in, d_in));
    let block = BLOCK_ROWS.min(rows.len());
    let mut xb = Mat::<f64>::zeros(block, d_in);
    let mut yb = vec![0.0f64; if adjacency.is_some() { block * d_in } else { 0 }];
    for start in rows.clone().step_by(BLOCK_ROWS) {
        done((start - rows.start) as f64 / rows.len().max(1) as f64);
        let count = BLOCK_ROWS.min(rows.end - start);
        for r in 0..count {
            for (c, &v) in x[(start + r) * d_in..(start + r + 1) * d_in].iter().enumerate() {
                xb[(r, c)] = v as f64;
            }
        }
        let xb_rows = xb.as_ref().subrows(0, count);
        add_lower_product(s.as_mut(), xb_rows, xb_rows);
        if let (Some(a), Some(g)) = (adjacency, g.as_mut()) {
            let y = &mut yb[..count * d_in];
            adjacency_times_x(a, x, d_in, start, y);
            add_lower_product(g.as_mut(), xb_rows, MatRef::from_row_major_slice(y, count, d_in));
        }
    }
    (s, g)
}

/// Rows scaled to unit length (zero rows stay zero), then the column mean
/// subtracted; computed in f64, stored back as f32. Returns the mean.
fn normalise_and_centre(e: &mut Embeddings) -> Vec<f64> {
    let d = e.input_dim;
    let n = e.n_items();
    let scale: Vec<f64> =
        (0..n).map(|i| 1.0 / e.row(i).iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12)).collect();
    let mut mean = vec![0.0f64; d];
    for (i, &s) in scale.iter().enumerate() {
        for (m, &v) in mean.iter_mut().zip(e.row(i)) {
            *m += v as f64 * s;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    for (row, &s) in e.values.chunks_exact_mut(d).zip(&scale) {
        for (v, &m) in row.iter_mut().zip(&mean) {
            *v = (*v as f64 * s - m) as f32;
        }
    }
    mean
}

/// Rows start..start+rows of ÂX into `y` (X stored as f32, sums in f64).
/// This is the one loop of Rec-PCA that is not a library GEMM; it runs
/// through [`simd::dispatch`] (the portable x86-64 build has only SSE2),
/// with the same result on every path (no fused multiply-adds).
fn adjacency_times_x(a: &CsMat<f64>, x: &[f32], d: usize, start: usize, y: &mut [f64]) {
    simd::dispatch(
        #[inline(always)]
        || adjacency_times_x_on_this_path(a, x, d, start, y),
    )
}

/// `y` holds whole rows (row-major), starting at row `start` of ÂX.
#[inline(always)]
fn adjacency_times_x_on_this_path(a: &CsMat<f64>, x: &[f32], d: usize, start: usize, y: &mut [f64]) {
    for (r, out) in y.chunks_exact_mut(d).enumerate() {
        out.fill(0.0);
        if let Some(row) = a.outer_view(start + r) {
            for (j, &w) in row.iter() {
                for (o, &v) in out.iter_mut().zip(&x[j * d..(j + 1) * d]) {
                    *o += w * v as f64;
                }
            }
        }
    }
}

/// dst += aᵀb on the lower triangle only: the products accumulated here
/// (XᵀX and Xᵀ(ÂX)) are symmetric, so half the work is enough.
fn add_lower_product(dst: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    triangular_matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Add,
        a.transpose(),
        BlockStructure::Rectangular,
        b,
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// The symmetric matrix (1−λ)·A + λ·B from the lower triangles of A and B
/// (B omitted: A alone).
fn symmetrised(a: MatRef<'_, f64>, b: Option<MatRef<'_, f64>>, lambda: f64) -> Mat<f64> {
    let d = a.nrows();
    let lower = |m: MatRef<'_, f64>, i: usize, j: usize| if i >= j { m[(i, j)] } else { m[(j, i)] };
    Mat::from_fn(d, d, |i, j| match b {
        None => lower(a, i, j),
        Some(b) => (1.0 - lambda) * lower(a, i, j) + lambda * lower(b, i, j),
    })
}

/// The eigenvectors of the `k` largest algebraic eigenvalues, largest first,
/// each with its largest-magnitude entry positive (the first such entry on a
/// tie), so that the same input always gives the same output.
fn top_eigenvectors(m: MatRef<'_, f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>), RecPcaError> {
    let eig = m.self_adjoint_eigen(Side::Lower).map_err(|_| RecPcaError::Eigen)?;
    let (u, s) = (eig.U(), eig.S());
    let d = m.nrows();
    let mut values = Vec::with_capacity(k);
    let mut w = Mat::<f64>::zeros(d, k);
    for c in 0..k {
        // ascending order: the largest is last
        let src = d - 1 - c;
        values.push(s[src]);
        let col = u.col(src);
        let mut pivot = 0;
        for i in 1..d {
            if col[i].abs() > col[pivot].abs() {
                pivot = i;
            }
        }
        let sign = if col[pivot] < 0.0 { -1.0 } else { 1.0 };
        for i in 0..d {
            w[(i, c)] = sign * col[i];
        }
    }
    Ok((w, values))
}

fn trace(a: MatRef<'_, f64>) -> f64 {
    (0..a.nrows()).map(|i| a[(i, i)]).sum()
}

/// tr(WᵀAW)
fn quadratic_trace(a: MatRef<'_, f64>, w: MatRef<'_, f64>) -> f64 {
    let mut aw = Mat::<f64>::zeros(a.nrows(), w.ncols());
    matmul(aw.as_mut(), Accum::Replace, a, w, 1.0, Par::Seq);
    let mut t = 0.0;
    for c in 0..w.ncols() {
        for r in 0..w.nrows() {
            t += w[(r, c)] * aw[(r, c)];
        }
    }
    t
}

/// Z = XW, each row scaled to unit length, as f32.
fn project(x: &[f32], n: usize, d_in: usize, w: MatRef<'_, f64>) -> Vec<f32> {
    let k = w.ncols();
    let mut z = Vec::with_capacity(n * k);
    let mut xb = Mat::<f64>::zeros(BLOCK_ROWS.min(n), d_in);
    let mut zb = Mat::<f64>::zeros(BLOCK_ROWS.min(n), k);
    for start in (0..n).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(n - start);
        for r in 0..rows {
            for (c, &v) in x[(start + r) * d_in..(start + r + 1) * d_in].iter().enumerate() {
                xb[(r, c)] = v as f64;
            }
        }
        let mut zr = zb.as_mut().subrows_mut(0, rows);
        matmul(zr.as_mut(), Accum::Replace, xb.as_ref().subrows(0, rows), w, 1.0, Par::Seq);
        for r in 0..rows {
            let norm = (0..k).map(|c| zr[(r, c)] * zr[(r, c)]).sum::<f64>().sqrt().max(1e-12);
            z.extend((0..k).map(|c| (zr[(r, c)] / norm) as f32));
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{build, Event, GraphParams};

    /// A small deterministic pseudo-random generator (xorshift), so tests
    /// need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.next().max(1e-300), self.next());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    fn random_embeddings(n: usize, d: usize, seed: u64) -> Embeddings {
        let mut rng = Rng(seed);
        let values = (0..n * d).map(|i| (rng.normal() * (1.0 + (i / d) as f64 % 5.0)) as f32).collect();
        Embeddings { ids: (0..n as i64).map(|i| i * 3 + 1).collect(), input_dim: d, values }
    }

    /// A graph over ids 1, 4, 7, ...: users walk through neighbouring items.
    fn ring_graph(n: usize, seed: u64) -> crate::CooccurrenceGraph {
        let mut rng = Rng(seed);
        let mut events = Vec::new();
        for user in 0..(n as i64 * 2) {
            let mut item = (rng.next() * n as f64) as i64;
            for t in 0..6 {
                events.push(Event { user, time: t, item: item * 3 + 1 });
                item = (item + 1 + (rng.next() * 3.0) as i64) % n as i64;
            }
        }
        build(events, &GraphParams { holdout: 0, ..GraphParams::default() }).unwrap().0
    }

    fn no_progress() -> impl Progress {
        |_: &'static str, _: f64| {}
    }

    /// X as rec_pca computes it, in f64, for checks.
    fn x_matrix(e: &Embeddings) -> Mat<f64> {
        let mut e = e.clone();
        normalise_and_centre(&mut e);
        Mat::from_fn(e.n_items(), e.input_dim, |i, j| e.values[i * e.input_dim + j] as f64)
    }

    fn dense(a: &CsMat<f64>) -> Mat<f64> {
        let mut m = Mat::zeros(a.rows(), a.cols());
        for (v, (i, j)) in a.iter() {
            m[(i, j)] = *v;
        }
        m
    }

    fn mat_mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut c = Mat::zeros(a.nrows(), b.ncols());
        matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
        c
    }

    /// W recovered from Z is not possible (Z is normalised), so the checks
    /// recompute M and its eigenvectors independently of rec_pca's loops.
    fn reference_m(e: &Embeddings, a: Option<&CsMat<f64>>, lambda: f64) -> Mat<f64> {
        let x = x_matrix(e);
        let s = mat_mul(x.transpose(), x.as_ref());
        match a {
            None => s,
            Some(a) => {
                let ax = mat_mul(dense(a).as_ref(), x.as_ref());
                let g = mat_mul(x.transpose(), ax.as_ref());
                symmetrised(s.as_ref(), Some(g.as_ref()), lambda)
            }
        }
    }

    #[test]
    fn the_adjacency_product_is_the_same_on_every_instruction_set() {
        let (n, d) = (70, 37);
        let e = random_embeddings(n, d, 5);
        let graph = ring_graph(n, 2);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let x = Mat::from_fn(n, d, |i, j| e.values[i * d + j] as f64);
        let ax = mat_mul(dense(&a).as_ref(), x.as_ref());
        let run = |p: &simd::Path| {
            let mut y = vec![f64::NAN; (n - 3) * d];
            p.run(
                #[inline(always)]
                || adjacency_times_x_on_this_path(&a, &e.values, d, 3, &mut y),
            );
            y
        };
        let paths = simd::paths();
        let scalar = run(&paths[0]);
        for (i, row) in scalar.chunks(d).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert!((v - ax[(i + 3, c)]).abs() < 1e-12, "ÂX[{}, {c}]", i + 3);
            }
        }
        for p in &paths[1..] {
            assert!(run(p).iter().zip(&scalar).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs", p.name());
        }
    }

    #[test]
    fn eigenvectors_are_orthonormal_and_solve_the_eigenproblem() {
        let e = random_embeddings(60, 12, 7);
        let graph = ring_graph(60, 3);
        let (a, missing) = graph.normalized_adjacency_for(&e.ids);
        assert_eq!(missing, 0);
        let m = reference_m(&e, Some(&a), 0.5);
        let (w, values) = top_eigenvectors(m.as_ref(), 5).unwrap();
        let wtw = mat_mul(w.transpose(), w.as_ref());
        for i in 0..5 {
            for j in 0..5 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((wtw[(i, j)] - want).abs() < 1e-12, "WᵀW[{i},{j}] = {}", wtw[(i, j)]);
            }
        }
        let mw = mat_mul(m.as_ref(), w.as_ref());
        for c in 0..5 {
            for r in 0..12 {
                assert!((mw[(r, c)] - values[c] * w[(r, c)]).abs() < 1e-10, "‖MW − WΛ‖ too large");
            }
        }
        assert!(values.windows(2).all(|p| p[0] >= p[1]), "eigenvalues not descending: {values:?}");
    }

    #[test]
    fn output_matches_an_independent_dense_computation() {
        let e = random_embeddings(50, 10, 11);
        let graph = ring_graph(50, 5);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let params = RecPcaParams::new(4, 0.7, 10, 50).unwrap();
        let out = rec_pca(e.clone(), Some(&a), params, &mut no_progress()).unwrap();
        let m = reference_m(&e, Some(&a), 0.7);
        let (w, _) = top_eigenvectors(m.as_ref(), 4).unwrap();
        let z = mat_mul(x_matrix(&e).as_ref(), w.as_ref());
        for i in 0..50 {
            let norm = (0..4).map(|c| z[(i, c)] * z[(i, c)]).sum::<f64>().sqrt();
            for c in 0..4 {
                assert!((out.z[i * 4 + c] as f64 - z[(i, c)] / norm).abs() < 1e-5);
            }
        }
        // every output row has unit length
        for row in out.z.chunks(4) {
            let norm: f64 = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn the_projection_maps_each_input_row_to_its_output_row() {
        // exact and randomized runs, with and without a graph: projecting
        // a row of the input again (as a cold-start item would be) gives
        // the row Rec-PCA output for it
        let (n, d, dim) = (300, 24, 6);
        let e = decaying_embeddings(n, d, 20, 3);
        let (a, _) = ring_graph(n, 5).normalized_adjacency_for(&e.ids);
        for graph in [None, Some(&a)] {
            let params = RecPcaParams { dim, lambda: 0.5, threads: 1 };
            let exact = rec_pca(e.clone(), graph, params, &mut no_progress()).unwrap();
            let mut source = e.clone();
            let fast = rec_pca_randomized(&mut source, graph, params, &Krylov::default(), &mut no_progress()).unwrap();
            for out in [&exact, &fast] {
                assert_eq!((out.projection.input_dim(), out.projection.dim), (d, dim));
                for i in 0..n {
                    let z = out.projection.project(e.row(i)).unwrap();
                    for (p, q) in z.iter().zip(&out.z[i * dim..(i + 1) * dim]) {
                        assert!((p - q).abs() < 1e-5, "row {i}: {p} vs {q}");
                    }
                }
                // the input's scale does not matter (rows are normalised first)
                let doubled: Vec<f32> = e.row(7).iter().map(|v| v * 2.0).collect();
                assert_eq!(out.projection.project(&doubled), out.projection.project(e.row(7)));
                // a row of another width, or with a NaN, has no projection
                assert_eq!(out.projection.project(&e.row(0)[1..]), None);
                let mut bad = e.row(0).to_vec();
                bad[3] = f32::NAN;
                assert_eq!(out.projection.project(&bad), None);
            }
        }
    }

    #[test]
    fn lambda_zero_is_plain_pca() {
        let e = random_embeddings(40, 8, 21);
        let graph = ring_graph(40, 9);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let with_graph =
            rec_pca(e.clone(), Some(&a), RecPcaParams::new(3, 0.0, 8, 40).unwrap(), &mut no_progress()).unwrap();
        let plain = rec_pca(e, None, RecPcaParams::new(3, 0.0, 8, 40).unwrap(), &mut no_progress()).unwrap();
        assert_eq!(with_graph.z, plain.z);
        assert_eq!(with_graph.retained_variance, plain.retained_variance);
        assert_eq!(with_graph.graph_tv, with_graph.graph_tv_pca);
        assert_eq!(plain.graph_tv, None);
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let e = random_embeddings(45, 9, 33);
        let graph = ring_graph(45, 13);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let out = rec_pca(e.clone(), Some(&a), RecPcaParams::new(3, 0.9, 9, 45).unwrap(), &mut no_progress()).unwrap();
        let x = x_matrix(&e);
        let (w, _) = top_eigenvectors(reference_m(&e, Some(&a), 0.9).as_ref(), 3).unwrap();
        let z = mat_mul(x.as_ref(), w.as_ref());
        let az = mat_mul(dense(&a).as_ref(), z.as_ref());
        let sum = |m: &Mat<f64>, o: &Mat<f64>| {
            let mut t = 0.0;
            for i in 0..m.nrows() {
                for j in 0..m.ncols() {
                    t += m[(i, j)] * o[(i, j)];
                }
            }
            t
        };
        let retained = sum(&z, &z) / sum(&x, &x);
        let tv = 1.0 - sum(&z, &az) / sum(&z, &z);
        assert!((out.retained_variance - retained).abs() < 1e-9, "{} vs {retained}", out.retained_variance);
        assert!((out.graph_tv.unwrap() - tv).abs() < 1e-9);
        // the graph penalty lowers total variation compared with plain PCA
        assert!(out.graph_tv.unwrap() < out.graph_tv_pca.unwrap());
        // and plain PCA keeps at least as much variance
        let pca = rec_pca(e, None, RecPcaParams::new(3, 0.0, 9, 45).unwrap(), &mut no_progress()).unwrap();
        assert!(pca.retained_variance >= out.retained_variance - 1e-12);
        assert!(pca.retained_variance <= 1.0 + 1e-12);
    }

    #[test]
    fn the_same_input_gives_bit_identical_output() {
        let e = random_embeddings(30, 7, 5);
        let graph = ring_graph(30, 2);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let p = RecPcaParams::new(4, 0.5, 7, 30).unwrap();
        let one = rec_pca(e.clone(), Some(&a), p, &mut no_progress()).unwrap();
        let two = rec_pca(e.clone(), Some(&a), p, &mut no_progress()).unwrap();
        assert_eq!(one, two);
        // flipping the sign of the input keeps the (sign-fixed) output's geometry
        let mut neg = e;
        neg.values.iter_mut().for_each(|v| *v = -*v);
        let three = rec_pca(neg, Some(&a), p, &mut no_progress()).unwrap();
        for (x, y) in one.z.iter().zip(&three.z) {
            assert!((x + y).abs() < 1e-5 || (x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn threads_change_nothing_but_rounding() {
        // enough rows for several blocks, so that the work is really split
        let e = random_embeddings(2600, 6, 17);
        let graph = ring_graph(2600, 4);
        let (a, _) = graph.normalized_adjacency_for(&e.ids);
        let one = RecPcaParams::new(3, 0.5, 6, 2600).unwrap();
        let single = rec_pca(e.clone(), Some(&a), one, &mut no_progress()).unwrap();
        for threads in [2, 3, 8] {
            let multi = rec_pca(e.clone(), Some(&a), RecPcaParams { threads, ..one }, &mut no_progress()).unwrap();
            assert!((single.retained_variance - multi.retained_variance).abs() < 1e-12);
            assert!((single.graph_tv.unwrap() - multi.graph_tv.unwrap()).abs() < 1e-12);
            assert!(single.z.iter().zip(&multi.z).all(|(p, q)| (p - q).abs() < 1e-5));
            // and the same thread count twice gives the same bits
            assert_eq!(
                multi,
                rec_pca(e.clone(), Some(&a), RecPcaParams { threads, ..one }, &mut no_progress()).unwrap()
            );
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let e = random_embeddings(5, 4, 1);
        assert!(matches!(RecPcaParams::new(0, 0.5, 4, 5), Err(RecPcaError::Dim { .. })));
        assert!(matches!(RecPcaParams::new(5, 0.5, 4, 5), Err(RecPcaError::Dim { .. })));
        assert!(matches!(RecPcaParams::new(4, 0.5, 4, 3), Err(RecPcaError::Dim { .. })));
        assert!(matches!(RecPcaParams::new(2, -0.1, 4, 5), Err(RecPcaError::Lambda(_))));
        assert!(matches!(RecPcaParams::new(2, f64::NAN, 4, 5), Err(RecPcaError::Lambda(_))));
        let mut nan = e.clone();
        nan.values[6] = f32::NAN;
        assert_eq!(validate(&nan), Err(RecPcaError::NotFinite { item: 4 }));
        let mut inf = e.clone();
        inf.values[0] = f32::INFINITY;
        assert_eq!(validate(&inf), Err(RecPcaError::NotFinite { item: 1 }));
        let mut dup = e.clone();
        dup.ids[3] = dup.ids[1];
        assert_eq!(validate(&dup), Err(RecPcaError::DuplicateItem(4)));
        assert_eq!(validate(&Embeddings { ids: vec![], input_dim: 4, values: vec![] }), Err(RecPcaError::Empty));
    }

    #[test]
    fn fewer_directions_of_variance_than_dim_is_an_error() {
        // parallel vectors are identical once scaled: no variance at all
        let parallel = Embeddings { ids: vec![1, 2, 3], input_dim: 2, values: vec![1.0, 0.0, 2.0, 0.0, 5.0, 0.0] };
        let params = RecPcaParams::new(1, 0.5, 2, 3).unwrap();
        assert_eq!(
            rec_pca(parallel, None, params, &mut no_progress()).err(),
            Some(RecPcaError::Rank { rank: 0, dim: 1, n_items: 3 })
        );
        // eight vectors in a 2-d plane of a 5-d space: two directions
        let values = (0..8)
            .flat_map(|i| {
                let a = i as f32 * 0.7;
                [a.cos() * (1.0 + i as f32), a.sin() * (1.0 + i as f32), 0.0, 0.0, 0.0]
            })
            .collect();
        let plane = Embeddings { ids: (1..=8).collect(), input_dim: 5, values };
        let rank = |e: &Embeddings, dim: i64, graph: bool| {
            let g = ring_graph(8, 1);
            let (a, _) = g.normalized_adjacency_for(&e.ids);
            let adjacency = graph.then_some(&a);
            rec_pca(e.clone(), adjacency, RecPcaParams::new(dim, 0.5, 5, 8).unwrap(), &mut no_progress()).map(|o| o.dim)
        };
        for graph in [false, true] {
            assert_eq!(rank(&plane, 2, graph), Ok(2));
            assert_eq!(rank(&plane, 3, graph), Err(RecPcaError::Rank { rank: 2, dim: 3, n_items: 8 }));
        }
    }

    #[test]
    fn zero_vectors_and_progress_are_handled() {
        let mut e = random_embeddings(20, 6, 3);
        e.values[..6].iter_mut().for_each(|v| *v = 0.0);
        let mut phases = Vec::new();
        let out = rec_pca(e, None, RecPcaParams::new(2, 0.5, 6, 20).unwrap(), &mut |p: &'static str, _| phases.push(p))
            .unwrap();
        assert!(out.z.iter().all(|v| v.is_finite()));
        assert_eq!(phases.first(), Some(&"normalising"));
        assert_eq!(phases.last(), Some(&"done"));
    }

    /// Embeddings with a decaying spectrum, as LLM vectors have: rows mix
    /// `rank` directions with weights 0.85^k, plus a little noise.
    fn decaying_embeddings(n: usize, d: usize, rank: usize, seed: u64) -> Embeddings {
        let mut rng = Rng(seed);
        let directions: Vec<f64> = (0..rank * d).map(|_| rng.normal()).collect();
        let mut values = Vec::with_capacity(n * d);
        for _ in 0..n {
            let mix: Vec<f64> = (0..rank).map(|k| rng.normal() * 0.85f64.powi(k as i32)).collect();
            for c in 0..d {
                let v: f64 = (0..rank).map(|k| mix[k] * directions[k * d + c]).sum::<f64>() + 0.01 * rng.normal();
                values.push((v * (1.0 + rng.next() * 9.0)) as f32);
            }
        }
        Embeddings { ids: (0..n as i64).map(|i| i * 3 + 1).collect(), input_dim: d, values }
    }

    #[test]
    fn the_randomized_method_agrees_with_the_exact_one() {
        let (n, d, dim) = (800, 256, 8);
        // blocks of 24 columns, 5 of them: a 120-dimensional Krylov space of 256
        let graph = ring_graph(n, 5);
        let ids: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
        let (adjacency, _) = graph.normalized_adjacency_for(&ids);
        for (lambda, with_graph) in [(0.5, true), (0.9, true), (0.0, false)] {
            let e = decaying_embeddings(n, d, 200, 11);
            let params = RecPcaParams { dim, lambda, threads: 1 };
            let a = with_graph.then_some(&adjacency);
            let exact = rec_pca(e.clone(), a, params, &mut no_progress()).unwrap();
            let mut source = e;
            let fast = rec_pca_randomized(&mut source, a, params, &Krylov::default(), &mut no_progress()).unwrap();
            for (x, y) in exact.eigenvalues.iter().zip(&fast.eigenvalues) {
                assert!((x - y).abs() <= 1e-6 * x.abs().max(1e-12), "lambda {lambda}: eigenvalue {x} vs {y}");
            }
            assert!((exact.retained_variance - fast.retained_variance).abs() < 1e-6, "lambda {lambda}");
            for (x, y) in [(exact.graph_tv, fast.graph_tv), (exact.graph_tv_pca, fast.graph_tv_pca)] {
                assert_eq!(x.is_some(), y.is_some());
                if let (Some(x), Some(y)) = (x, y) {
                    assert!((x - y).abs() < 1e-6, "lambda {lambda}: graph_tv {x} vs {y}");
                }
            }
            // the same output rows, up to f32 rounding
            for (p, q) in exact.z.iter().zip(&fast.z) {
                assert!((p - q).abs() < 1e-3, "lambda {lambda}: z {p} vs {q}");
            }
        }
    }

    #[test]
    fn the_randomized_method_finds_the_largest_algebraic_eigenvalues() {
        // λ = 1: M = Xᵀ(ÂX) has negative eigenvalues; the top `dim` must be
        // the largest, not the largest in magnitude
        let (n, d, dim) = (300, 120, 4);
        let graph = ring_graph(n, 8);
        let ids: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
        let (adjacency, _) = graph.normalized_adjacency_for(&ids);
        let e = decaying_embeddings(n, d, 30, 3);
        let params = RecPcaParams { dim, lambda: 1.0, threads: 1 };
        let exact = rec_pca(e.clone(), Some(&adjacency), params, &mut no_progress()).unwrap();
        let mut source = e;
        let fast =
            rec_pca_randomized(&mut source, Some(&adjacency), params, &Krylov::default(), &mut no_progress()).unwrap();
        for (x, y) in exact.eigenvalues.iter().zip(&fast.eigenvalues) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "eigenvalue {x} vs {y}");
        }
    }

    #[test]
    fn the_randomized_method_refuses_what_the_exact_one_refuses() {
        let mut parallel = Embeddings { ids: vec![1, 2, 3], input_dim: 2, values: vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0] };
        let params = RecPcaParams { dim: 1, lambda: 0.0, threads: 1 };
        let err = rec_pca_randomized(&mut parallel, None, params, &Krylov::default(), &mut no_progress()).unwrap_err();
        assert!(matches!(err, RecPcaError::Rank { rank: 0, .. }), "{err:?}");
        let mut nan = Embeddings { ids: vec![5, 6], input_dim: 2, values: vec![1.0, 0.0, f32::NAN, 1.0] };
        let err = rec_pca_randomized(&mut nan, None, params, &Krylov::default(), &mut no_progress()).unwrap_err();
        assert_eq!(err, RecPcaError::NotFinite { item: 6 });
        let mut e = decaying_embeddings(10, 4, 4, 1);
        let too_wide = RecPcaParams { dim: 5, ..params };
        assert!(matches!(
            rec_pca_randomized(&mut e, None, too_wide, &Krylov::default(), &mut no_progress()),
            Err(RecPcaError::Dim { .. })
        ));
    }

    #[test]
    fn auto_picks_the_exact_method_while_it_fits_in_a_gigabyte() {
        assert_eq!(Method::auto(3_883, 768), Method::Exact);
        assert_eq!(Method::auto(100_000, 768), Method::Exact);
        assert_eq!(Method::auto(1_000_000, 1024), Method::Randomized);
        assert_eq!(Method::auto(200_000, 4096), Method::Randomized);
        assert_eq!(Method::auto(usize::MAX, usize::MAX), Method::Randomized);
        assert_eq!(Method::parse("auto"), Some(None));
        assert_eq!(Method::parse("exact"), Some(Some(Method::Exact)));
        assert_eq!(Method::parse("fast"), None);
    }
}
