//! Rec-PCA for large inputs: the top eigenvectors of
//! M = (1−λ)·XᵀX + λ·Xᵀ(ÂX) without forming a D × D product over all rows
//! and without holding X. M is applied as an operator,
//! V ↦ Xᵀ((1−λ)·XV + λ·Â(XV)), inside a randomized block Krylov method
//! (Halko, Martinsson & Tropp, SIAM Review 2011; Musco & Musco, NeurIPS
//! 2015): Q₀ = orth(Ω) for a seeded Gaussian D × b block, Qⱼ₊₁ = the part of
//! M·Qⱼ orthogonal to Q₀..Qⱼ (classical Gram–Schmidt twice, then QR), and a
//! Rayleigh–Ritz step on Q = [Q₀ … Q_q]: the eigenvectors of QᵀMQ give
//! W = Q·U. Every M·Qⱼ is kept, so QᵀMQ needs no extra product; a Krylov
//! space finds the largest algebraic eigenvalues even when M has negative
//! ones (λ > ½).
//!
//! Each product with M is two passes over the rows (XV, then Xᵀ(·)), read
//! from a [`RowSource`] that may stream them from a table; rows are scaled
//! to unit length and centred as they arrive (the mean from a first pass).
//! Plain PCA's eigenvectors (for graph_tv_pca) are found in the same passes
//! as a second block. A last pass projects: Z = XW, retained variance and
//! the graph's total variation from Z itself.
//!
//! Passes: 2 + 2·blocks (12 with the default 5 blocks). Memory, with
//! b = dim + oversampling and c = 2b columns (b without a graph): the
//! N × c products XV as f32 (4·N·c bytes), N × b for Â(XV), N × dim for
//! the output, D × b·blocks twice in f64 for Q and MQ, and one block of
//! rows: for N = 1M, D = 1024, dim = 64, about 1.2 GB (the exact method:
//! 4·N·D + 32·D², 4.1 GB). Flops: 4·N·D·c per product with M.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use sprs::CsMat;

use super::{
    top_eigenvectors, Embeddings, Progress, Projection, RecPcaError, RecPcaOutput, RecPcaParams, BLOCK_ROWS,
    RANK_TOLERANCE,
};

/// What a pass hands each block of rows to: (places, row-major values).
pub type BlockFn<'a> = dyn FnMut(&[usize], &[f32]) -> Result<(), RecPcaError> + 'a;

/// Rows of the input embeddings, read in whole passes.
pub trait RowSource {
    /// The number of rows N.
    fn rows(&self) -> usize;
    /// The width D of every row.
    fn dim(&self) -> usize;
    /// Calls `f(places, values)` with blocks of rows: `values` holds whole
    /// rows (row-major f32), `places[k]` is the place (0..N) of its k-th
    /// row. Every place comes once a pass; the order may change between
    /// passes (a table scan's does).
    fn pass(&mut self, f: &mut BlockFn<'_>) -> Result<(), RecPcaError>;
    /// The item id at `place` (for messages).
    fn item_id(&self, place: usize) -> i64;
}

impl RowSource for Embeddings {
    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn dim(&self) -> usize {
        self.input_dim
    }

    fn pass(&mut self, f: &mut BlockFn<'_>) -> Result<(), RecPcaError> {
        let places: Vec<usize> = (0..BLOCK_ROWS).collect();
        for (b, block) in self.values.chunks(BLOCK_ROWS * self.input_dim.max(1)).enumerate() {
            let first = b * BLOCK_ROWS;
            let rows = block.len() / self.input_dim.max(1);
            let places: Vec<usize> = places[..rows].iter().map(|p| p + first).collect();
            f(&places, block)?;
        }
        Ok(())
    }

    fn item_id(&self, row: usize) -> i64 {
        self.ids.get(row).copied().unwrap_or(-1)
    }
}

/// Settings of the block Krylov solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Krylov {
    /// columns beyond dim in each block (b = dim + oversampling, at most D)
    pub oversampling: usize,
    /// Krylov blocks (products with M); fewer when blocks·b would exceed D
    pub blocks: usize,
    /// seed of the random start block
    pub seed: u64,
}

impl Default for Krylov {
    fn default() -> Self {
        Self { oversampling: 16, blocks: 5, seed: 0x5eed_5eed }
    }
}

impl Krylov {
    /// (block width b, number of blocks) for `dim` of `d` dimensions.
    fn shape(&self, dim: usize, d: usize) -> (usize, usize) {
        let b = (dim + self.oversampling).min(d).max(1);
        (b, self.blocks.clamp(1, (d / b).max(1)))
    }

    /// Passes over the rows for `dim` of `d` dimensions.
    pub fn passes(&self, dim: usize, d: usize) -> usize {
        2 + 2 * self.shape(dim, d).1
    }
}

/// What the first pass learns: rows, the mean of the unit-length rows and
/// tr(XᵀX) of the centred ones.
struct Summary {
    n: usize,
    mean: Vec<f64>,
    total: f64,
}

/// A block of raw rows scaled to unit length (zero rows stay zero) and
/// centred, as in the exact method.
fn centred_block(raw: &[f32], d: usize, mean: &[f64]) -> Mat<f64> {
    let rows = raw.len() / d.max(1);
    let mut x = Mat::<f64>::zeros(rows, d);
    for (r, row) in raw.chunks_exact(d).enumerate() {
        let scale = 1.0 / row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        for (c, (&v, &m)) in row.iter().zip(mean).enumerate() {
            x[(r, c)] = v as f64 * scale - m;
        }
    }
    x
}

fn summarise(source: &mut impl RowSource) -> Result<Summary, RecPcaError> {
    let (n, d) = (source.rows(), source.dim());
    if n == 0 || d == 0 {
        return Err(RecPcaError::Empty);
    }
    let mut sum = vec![0.0f64; d];
    let mut squares = 0.0f64;
    let mut seen = vec![false; n];
    let mut bad: Option<usize> = None;
    source.pass(&mut |places, block| {
        for (&place, row) in places.iter().zip(block.chunks_exact(d)) {
            if std::mem::replace(&mut seen[place], true) {
                return Err(RecPcaError::Source("a row came twice in one pass".into()));
            }
            if row.iter().any(|v| !v.is_finite()) {
                bad = bad.or(Some(place));
                continue;
            }
            let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let scale = 1.0 / norm.max(1e-12);
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v as f64 * scale;
            }
            squares += (norm * scale).powi(2);
        }
        Ok(())
    })?;
    if let Some(place) = bad {
        return Err(RecPcaError::NotFinite { item: source.item_id(place) });
    }
    if seen.iter().any(|&s| !s) {
        return Err(RecPcaError::Source("the rows changed between passes".into()));
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let total = squares - n as f64 * mean.iter().map(|m| m * m).sum::<f64>();
    Ok(Summary { n, mean, total: total.max(0.0) })
}

/// y ← Â·y on the first `cols` of `c` columns (row-major N × c, f32 storage,
/// f64 sums).
fn adjacency_times(a: &CsMat<f64>, y: &[f32], c: usize, cols: usize) -> Vec<f32> {
    let n = y.len() / c.max(1);
    let mut out = vec![0.0f32; n * cols];
    let mut acc = vec![0.0f64; cols];
    for (i, o) in out.chunks_exact_mut(cols).enumerate() {
        acc.fill(0.0);
        if let Some(row) = a.outer_view(i) {
            for (j, &w) in row.iter() {
                for (s, &v) in acc.iter_mut().zip(&y[j * c..j * c + cols]) {
                    *s += w * v as f64;
                }
            }
        }
        o.iter_mut().zip(&acc).for_each(|(o, &s)| *o = s as f32);
    }
    out
}

/// X·V for every row (N × c, f32, by place), one pass.
fn times_x(source: &mut impl RowSource, s: &Summary, v: MatRef<'_, f64>) -> Result<Vec<f32>, RecPcaError> {
    let (d, c) = (v.nrows(), v.ncols());
    let mut y = vec![0.0f32; s.n * c];
    let mut count = 0usize;
    source.pass(&mut |places, block| {
        let x = centred_block(block, d, &s.mean);
        let mut out = Mat::<f64>::zeros(x.nrows(), c);
        matmul(out.as_mut(), Accum::Replace, x.as_ref(), v, 1.0, Par::Seq);
        for (r, &place) in places.iter().enumerate() {
            let Some(row) = y.get_mut(place * c..(place + 1) * c) else {
                return Err(RecPcaError::Source("the rows changed between passes".into()));
            };
            row.iter_mut().enumerate().for_each(|(k, v)| *v = out[(r, k)] as f32);
        }
        count += places.len();
        Ok(())
    })?;
    if count != s.n {
        return Err(RecPcaError::Source("the rows changed between passes".into()));
    }
    Ok(y)
}

/// Xᵀ·Y (D × c) for Y given by place (N × c, f32), one pass.
fn times_x_transposed(source: &mut impl RowSource, s: &Summary, y: &[f32], c: usize) -> Result<Mat<f64>, RecPcaError> {
    let d = source.dim();
    let mut acc = Mat::<f64>::zeros(d, c);
    let mut count = 0usize;
    source.pass(&mut |places, block| {
        let x = centred_block(block, d, &s.mean);
        let mut yb = Mat::<f64>::zeros(places.len(), c);
        for (r, &place) in places.iter().enumerate() {
            let Some(row) = y.get(place * c..(place + 1) * c) else {
                return Err(RecPcaError::Source("the rows changed between passes".into()));
            };
            row.iter().enumerate().for_each(|(k, &v)| yb[(r, k)] = v as f64);
        }
        matmul(acc.as_mut(), Accum::Add, x.as_ref().transpose(), yb.as_ref(), 1.0, Par::Seq);
        count += places.len();
        Ok(())
    })?;
    if count != s.n {
        return Err(RecPcaError::Source("the rows changed between passes".into()));
    }
    Ok(acc)
}

/// The columns of `x` made orthonormal and orthogonal to every block in
/// `basis` (classical Gram–Schmidt twice, then a thin QR).
fn orthonormal_against(mut x: Mat<f64>, basis: &[Mat<f64>]) -> Mat<f64> {
    for _ in 0..2 {
        for q in basis {
            let mut coef = Mat::<f64>::zeros(q.ncols(), x.ncols());
            matmul(coef.as_mut(), Accum::Replace, q.as_ref().transpose(), x.as_ref(), 1.0, Par::Seq);
            matmul(x.as_mut(), Accum::Add, q.as_ref(), coef.as_ref(), -1.0, Par::Seq);
        }
    }
    x.qr().compute_thin_Q()
}

/// Columns side by side.
fn hstack(blocks: &[Mat<f64>]) -> Mat<f64> {
    let rows = blocks.first().map_or(0, |b| b.nrows());
    let cols: usize = blocks.iter().map(|b| b.ncols()).sum();
    let mut out = Mat::<f64>::zeros(rows, cols);
    let mut at = 0;
    for b in blocks {
        out.as_mut().submatrix_mut(0, at, rows, b.ncols()).copy_from(b.as_ref());
        at += b.ncols();
    }
    out
}

/// Each column's sign set so that its largest-magnitude entry is positive
/// (the exact method's convention).
fn fix_signs(mut w: MatMut<'_, f64>) {
    for c in 0..w.ncols() {
        let mut pivot = 0;
        for i in 1..w.nrows() {
            if w[(i, c)].abs() > w[(pivot, c)].abs() {
                pivot = i;
            }
        }
        if w[(pivot, c)] < 0.0 {
            for i in 0..w.nrows() {
                w[(i, c)] = -w[(i, c)];
            }
        }
    }
}

/// One Krylov sequence: its orthonormal blocks Qⱼ and their products M·Qⱼ.
struct Sequence {
    q: Vec<Mat<f64>>,
    mq: Vec<Mat<f64>>,
}

impl Sequence {
    /// W (D × dim) and the Ritz values, largest first.
    fn ritz(&self, dim: usize) -> Result<(Mat<f64>, Vec<f64>), RecPcaError> {
        let (q, mq) = (hstack(&self.q), hstack(&self.mq));
        let mut b = Mat::<f64>::zeros(q.ncols(), q.ncols());
        matmul(b.as_mut(), Accum::Replace, q.as_ref().transpose(), mq.as_ref(), 1.0, Par::Seq);
        let sym = Mat::<f64>::from_fn(b.nrows(), b.ncols(), |i, j| 0.5 * (b[(i, j)] + b[(j, i)]));
        let (u, values) = top_eigenvectors(sym.as_ref(), dim)?;
        let mut w = Mat::<f64>::zeros(q.nrows(), dim);
        matmul(w.as_mut(), Accum::Replace, q.as_ref(), u.as_ref(), 1.0, Par::Seq);
        fix_signs(w.as_mut());
        Ok((w, values))
    }
}

/// A seeded D × b block of standard normal values.
fn gaussian(d: usize, b: usize, seed: u64) -> Mat<f64> {
    let mut state = seed;
    let mut next = move || {
        // SplitMix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    Mat::from_fn(d, b, |_, _| {
        let (u, v) = (next().max(1e-300), next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    })
}

/// Runs Rec-PCA by the randomized block Krylov method over the rows of
/// `source`; `adjacency` is Â over the same rows in the same order. The
/// same outputs as [`super::rec_pca`] (eigenvalues are Ritz values;
/// see the module's notes on accuracy, memory and passes).
pub fn rec_pca_randomized(
    source: &mut impl RowSource,
    adjacency: Option<&CsMat<f64>>,
    params: RecPcaParams,
    krylov: &Krylov,
    progress: &mut impl Progress,
) -> Result<RecPcaOutput, RecPcaError> {
    let d = source.dim();
    let dim = params.dim;
    let passes = krylov.passes(dim, d) as f64;
    progress.report("reading: mean and variance", 0.0);
    let s = summarise(source)?;
    if dim == 0 || dim > d.min(s.n) {
        return Err(RecPcaError::Dim { dim: dim as i64, input_dim: d, n_items: s.n });
    }
    if let Some(a) = adjacency {
        if a.rows() != s.n || a.cols() != s.n {
            return Err(RecPcaError::Source(format!("the graph has {} rows, the embeddings {}", a.rows(), s.n)));
        }
    }
    let graph = adjacency.filter(|_| params.lambda != 0.0);
    let (b, blocks) = krylov.shape(dim, d);
    // sequence 0: M; sequence 1 (with a graph term): S = XᵀX, for plain PCA
    let count = if graph.is_some() { 2 } else { 1 };
    let mut sequences: Vec<Sequence> = (0..count).map(|_| Sequence { q: Vec::new(), mq: Vec::new() }).collect();
    let mut current: Vec<Mat<f64>> =
        (0..count).map(|k| orthonormal_against(gaussian(d, b, krylov.seed ^ k as u64), &[])).collect();
    for j in 0..blocks {
        progress.report("reading: products with M", (1.0 + 2.0 * j as f64) / passes);
        let v = hstack(&current);
        let mut y = times_x(source, &s, v.as_ref())?;
        let c = v.ncols();
        if let Some(a) = graph {
            // the first b columns are M's: (1−λ)·XV + λ·Â(XV)
            let ay = adjacency_times(a, &y, c, b);
            let l = params.lambda;
            for (row, arow) in y.chunks_exact_mut(c).zip(ay.chunks_exact(b)) {
                for (v, &w) in row[..b].iter_mut().zip(arow) {
                    *v = ((1.0 - l) * *v as f64 + l * w as f64) as f32;
                }
            }
        }
        let mv = times_x_transposed(source, &s, &y, c)?;
        drop(y);
        for (k, seq) in sequences.iter_mut().enumerate() {
            let part = mv.as_ref().submatrix(0, k * b, d, b).to_owned();
            seq.q.push(std::mem::replace(&mut current[k], Mat::zeros(0, 0)));
            if j + 1 < blocks {
                current[k] = orthonormal_against(part.clone(), &seq.q);
            }
            seq.mq.push(part);
        }
    }
    progress.report("eigendecomposition", (passes - 1.0) / passes);
    let (w, eigenvalues) = sequences[0].ritz(dim)?;
    let pca = if count == 2 { Some(sequences[1].ritz(dim)?) } else { None };
    let variances = pca.as_ref().map_or(&eigenvalues, |(_, v)| v);
    let rank = variances.iter().filter(|&&v| v > RANK_TOLERANCE * s.total).count();
    if rank < dim {
        return Err(RecPcaError::Rank { rank, dim, n_items: s.n });
    }

    progress.report("projecting", (passes - 1.0) / passes);
    let mut cols = vec![w];
    if let Some((wp, _)) = &pca {
        cols.push(wp.clone());
    }
    let p = hstack(&cols);
    let c = p.ncols();
    let y = times_x(source, &s, p.as_ref())?;
    let kept: f64 = y.chunks_exact(c).map(|r| r[..dim].iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sum();
    let retained_variance = if s.total > 0.0 { kept / s.total } else { 0.0 };
    let tv = |first: usize| -> Option<f64> {
        let a = adjacency?;
        // tr(ZᵀÂZ) and tr(ZᵀZ) for the columns first..first+dim
        let mut az = vec![0.0f64; dim];
        let (mut across, mut own) = (0.0f64, 0.0f64);
        for (i, zi) in y.chunks_exact(c).enumerate() {
            let zi = &zi[first..first + dim];
            az.fill(0.0);
            if let Some(row) = a.outer_view(i) {
                for (j, &wt) in row.iter() {
                    for (s, &v) in az.iter_mut().zip(&y[j * c + first..j * c + first + dim]) {
                        *s += wt * v as f64;
                    }
                }
            }
            across += zi.iter().zip(&az).map(|(&z, &a)| z as f64 * a).sum::<f64>();
            own += zi.iter().map(|&z| z as f64 * z as f64).sum::<f64>();
        }
        Some(if own > 0.0 { 1.0 - across / own } else { 0.0 })
    };
    let graph_tv = tv(0);
    let graph_tv_pca = if pca.is_some() { tv(dim) } else { graph_tv };
    let mut z = Vec::with_capacity(s.n * dim);
    for row in y.chunks_exact(c) {
        let row = &row[..dim];
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        z.extend(row.iter().map(|&v| (v as f64 / norm) as f32));
    }
    progress.report("done", 1.0);
    let projection = Projection::new(s.mean, cols[0].as_ref());
    Ok(RecPcaOutput { z, dim, retained_variance, graph_tv, graph_tv_pca, eigenvalues, projection })
}
