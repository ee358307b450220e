//! Cold-start items: the map from an item's LLM embedding to a row of a
//! trained model's item table, for items the model never saw in training.
//!
//! Two steps. The Rec-PCA projection of the model's init embedding takes
//! the LLM vector x to its init row z (the row the item would have started
//! from: [`Projection`]). Training then moved every warm item's row away
//! from its init row; an affine map fitted on the warm items carries z to
//! where trained rows of such init rows lie:
//!
//!   y = z·A + b,   (A, b) = argmin Σ_t ‖z_t·A + b − e_t‖² + α·‖A‖²_F
//!
//! over the warm items t (z_t their init rows, e_t their trained rows as the
//! model scores them: unit length when the model normalises), i.e. ridge
//! regression (Hoerl & Kennard, 1970) with the intercept unpenalised:
//! A = (Z̃ᵀZ̃ + αI)⁻¹ Z̃ᵀẼ on the centred Z̃, Ẽ and b = ē − z̄·A. α is chosen
//! from a grid by the mean cosine between predicted and trained rows on a
//! seeded tenth of the warm items, then A is refitted on all of them. y is
//! the item's stored row: a model that normalises its item rows normalises
//! it where it scores, exactly as it does its trained rows.
//!
//! Cost: O(N·d²) to fit (N warm items, d the model's dimension), O(D·d)
//! per cold item; stored, D·d + D + d² + d values in f64.

use std::fmt;

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, Par, Side};

use crate::rec_pca::Projection;

/// Ridge strengths tried, as multiples of tr(Z̃ᵀZ̃)/d.
const ALPHA_GRID: [f64; 6] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// The map from LLM embeddings to item rows of one trained model.
#[derive(Clone, Debug, PartialEq)]
pub struct ColdMap {
    /// LLM vector → init row (the init embedding's Rec-PCA projection)
    pub projection: Projection,
    /// A: d × d, row-major (init row on the left)
    pub weights: Vec<f64>,
    /// b: d
    pub bias: Vec<f64>,
    /// whether the model scales rows to unit length where it scores (the
    /// targets of the fit were unit rows then)
    pub normalize: bool,
    /// how well it fits (for the job's detail and the docs)
    pub fit: FitReport,
}

/// What fitting found, measured on the held-out tenth of the warm items.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitReport {
    /// the warm items it was fitted on
    pub items: usize,
    /// the ridge strength chosen (absolute)
    pub alpha: f64,
    /// mean cosine between the mapped and the trained rows
    pub cosine: f64,
    /// the same for the init rows left as they are (the identity map)
    pub identity_cosine: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ColdError {
    /// fewer warm items than the map can be fitted on
    TooFew { items: usize, needed: usize },
    /// rows of another width than the projection's output
    Width { expected: usize, found: usize },
    /// a value that is not finite in the rows
    NotFinite,
    /// the stored form does not decode
    Corrupt(String),
}

impl fmt::Display for ColdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColdError::TooFew { items, needed } => {
                write!(f, "{items} warm item(s) have an init row; the cold-item map needs at least {needed}")
            }
            ColdError::Width { expected, found } => write!(f, "rows have {found} values, expected {expected}"),
            ColdError::NotFinite => write!(f, "a row holds a value that is not finite"),
            ColdError::Corrupt(why) => write!(f, "stored cold-item map is corrupt: {why}"),
        }
    }
}

impl std::error::Error for ColdError {}

/// The least number of warm items to fit a map on: one more than its
/// dimension, so that the held-out tenth and the rest are both non-empty.
pub fn min_items(dim: usize) -> usize {
    (dim + 1).max(10)
}

/// Fits the map of a model from its warm items: `init` and `trained` are
/// row-major N × d (row t of each is the same item; d = the projection's
/// output width). `seed` picks the held-out tenth that chooses α.
pub fn fit(
    projection: Projection,
    init: &[f32],
    trained: &[f32],
    normalize: bool,
    seed: u64,
) -> Result<ColdMap, ColdError> {
    let d = projection.dim;
    if d == 0 || !init.len().is_multiple_of(d) || init.len() != trained.len() {
        return Err(ColdError::Width { expected: d, found: if d == 0 { 0 } else { trained.len() / d.max(1) } });
    }
    if init.iter().chain(trained).any(|v| !v.is_finite()) {
        return Err(ColdError::NotFinite);
    }
    let n = init.len() / d;
    if n < min_items(d) {
        return Err(ColdError::TooFew { items: n, needed: min_items(d) });
    }
    // the held-out tenth: a seeded shuffle's first n/10 rows
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let (held, kept) = order.split_at((n / 10).max(1));
    let kept_moments = Moments::of(kept, init, trained, d);
    let held_moments = Moments::of(held, init, trained, d);
    let scale = (0..d).map(|i| kept_moments.centred_zz(i, i)).sum::<f64>() / d as f64;
    let mut best: Option<(f64, f64)> = None;
    for multiple in ALPHA_GRID {
        let alpha = multiple * scale.max(f64::MIN_POSITIVE);
        let (a, b) = kept_moments.solve_ridge(alpha)?;
        let cosine = mean_cosine(held, init, trained, d, |z| apply(&a, &b, z));
        if best.is_none_or(|(_, c)| cosine > c) {
            best = Some((alpha, cosine));
        }
    }
    let (alpha, cosine) = best.unwrap_or((scale, 0.0));
    let identity_cosine = mean_cosine(held, init, trained, d, |z| z.to_vec());
    let (a, b) = kept_moments.plus(&held_moments).solve_ridge(alpha)?;
    let mut weights = Vec::with_capacity(d * d);
    for r in 0..d {
        weights.extend((0..d).map(|c| a[(r, c)]));
    }
    Ok(ColdMap { projection, weights, bias: b, normalize, fit: FitReport { items: n, alpha, cosine, identity_cosine } })
}

/// Rows gathered per block product when summing moments.
const MOMENT_BLOCK: usize = 1024;

/// The sums a ridge fit needs over a set of rows (init rows Z, trained rows
/// E): n, Σz, Σe, ZᵀZ and ZᵀE, in f64. Made in one pass over the rows, a
/// block of rows at a time: memory O(d²), whatever the number of items.
struct Moments {
    n: f64,
    sz: Vec<f64>,
    se: Vec<f64>,
    zz: Mat<f64>,
    ze: Mat<f64>,
}

impl Moments {
    fn of(rows: &[usize], init: &[f32], trained: &[f32], d: usize) -> Self {
        let mut m = Moments { n: 0.0, sz: vec![0.0; d], se: vec![0.0; d], zz: Mat::zeros(d, d), ze: Mat::zeros(d, d) };
        for block in rows.chunks(MOMENT_BLOCK) {
            let zb = Mat::<f64>::from_fn(block.len(), d, |r, c| init[block[r] * d + c] as f64);
            let eb = Mat::<f64>::from_fn(block.len(), d, |r, c| trained[block[r] * d + c] as f64);
            matmul(m.zz.as_mut(), Accum::Add, zb.transpose(), zb.as_ref(), 1.0, Par::Seq);
            matmul(m.ze.as_mut(), Accum::Add, zb.transpose(), eb.as_ref(), 1.0, Par::Seq);
            for r in 0..block.len() {
                for c in 0..d {
                    m.sz[c] += zb[(r, c)];
                    m.se[c] += eb[(r, c)];
                }
            }
            m.n += block.len() as f64;
        }
        m
    }

    fn plus(&self, other: &Moments) -> Moments {
        let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect();
        Moments {
            n: self.n + other.n,
            sz: add(&self.sz, &other.sz),
            se: add(&self.se, &other.se),
            zz: &self.zz + &other.zz,
            ze: &self.ze + &other.ze,
        }
    }

    /// (Z̃ᵀZ̃)ᵢⱼ of the centred rows: (ZᵀZ)ᵢⱼ − n·z̄ᵢ·z̄ⱼ.
    fn centred_zz(&self, i: usize, j: usize) -> f64 {
        self.zz[(i, j)] - self.sz[i] * self.sz[j] / self.n.max(1.0)
    }

    /// A (d × d) and b (d): A = (Z̃ᵀZ̃ + αI)⁻¹ Z̃ᵀẼ, b = ē − z̄·A.
    fn solve_ridge(&self, alpha: f64) -> Result<(Mat<f64>, Vec<f64>), ColdError> {
        let d = self.sz.len();
        let n = self.n.max(1.0);
        let mut g = Mat::<f64>::from_fn(d, d, |i, j| self.centred_zz(i, j));
        for i in 0..d {
            g[(i, i)] += alpha;
        }
        let rhs = Mat::<f64>::from_fn(d, d, |i, j| self.ze[(i, j)] - self.sz[i] * self.se[j] / n);
        let llt = g.llt(Side::Lower).map_err(|_| ColdError::NotFinite)?;
        let a = llt.solve(&rhs);
        let b = (0..d).map(|c| (self.se[c] - (0..d).map(|k| self.sz[k] * a[(k, c)]).sum::<f64>()) / n).collect();
        Ok((a, b))
    }
}

fn apply(a: &Mat<f64>, b: &[f64], z: &[f64]) -> Vec<f64> {
    let d = b.len();
    (0..d).map(|c| b[c] + (0..d).map(|k| z[k] * a[(k, c)]).sum::<f64>()).collect()
}

/// Mean cosine between `f(z_r)` and e_r over the rows `rows`.
fn mean_cosine(rows: &[usize], init: &[f32], trained: &[f32], d: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> f64 {
    let mut total = 0.0;
    for &r in rows {
        let z: Vec<f64> = init[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
        let e: Vec<f64> = trained[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
        total += cosine(&f(&z), &e);
    }
    total / rows.len().max(1) as f64
}

fn cosine(x: &[f64], y: &[f64]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    let norms = x.iter().map(|v| v * v).sum::<f64>().sqrt() * y.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norms > 0.0 {
        dot / norms
    } else {
        0.0
    }
}

/// Whether item `item_id` is in the seeded hold-out of share `share` (in
/// [0, 1]): a hash of (seed, item id) below share·2⁶⁴. Independent for
/// every item, the same on every machine, and nested: an item held out at
/// share p is held out at every larger share with the same seed. (SQL:
/// tfllmer.cold_holdout, for building the graph without those items.)
pub fn held_out(item_id: i64, share: f64, seed: u64) -> bool {
    let mut state = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ item_id as u64;
    let draw = splitmix(&mut state);
    (draw as f64) < share * 18_446_744_073_709_551_616.0
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ColdMap {
    /// The same map with A = I and b = 0: cold items keep their init rows
    /// (normalised when the model normalises). The ablation of the fitted
    /// map (train option cold_map 'init'); the fit report stays.
    pub fn identity(mut self) -> Self {
        let d = self.dim();
        self.weights = (0..d * d).map(|i| if i / d == i % d { 1.0 } else { 0.0 }).collect();
        self.bias = vec![0.0; d];
        self
    }

    /// The model's dimension d.
    pub fn dim(&self) -> usize {
        self.bias.len()
    }

    /// The stored item row of an init row z (d values, from the projection
    /// or the init embedding itself): y = z·A + b, not normalised (the
    /// model normalises it where it scores, when it normalises its rows).
    pub fn row_of_init(&self, z: &[f32]) -> Vec<f32> {
        let d = self.dim();
        let mut y = self.bias.clone();
        for (&zk, a) in z.iter().zip(self.weights.chunks_exact(d)) {
            for (y, &a) in y.iter_mut().zip(a) {
                *y += zk as f64 * a;
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    /// The item row of an LLM embedding x (the init embedding's input
    /// width); None when x has another width or a value that is not finite.
    pub fn row(&self, x: &[f32]) -> Option<Vec<f32>> {
        self.projection.project(x).map(|z| self.row_of_init(&z))
    }

    /// The stored form (little-endian): magic b"TFCM", format version u32
    /// (1), D u32, d u32, normalize u8, the fit report (items u64, alpha,
    /// cosine, identity_cosine f64), μ (D f64), W (D × d f64), A (d × d
    /// f64), b (d f64).
    pub fn encode(&self) -> Vec<u8> {
        let (big_d, d) = (self.projection.input_dim(), self.dim());
        let mut out = Vec::with_capacity(4 + 4 + 4 + 4 + 1 + 32 + 8 * (big_d * (d + 1) + d * (d + 1)));
        out.extend_from_slice(COLD_MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(big_d as u32).to_le_bytes());
        out.extend_from_slice(&(d as u32).to_le_bytes());
        out.push(self.normalize as u8);
        out.extend_from_slice(&(self.fit.items as u64).to_le_bytes());
        for v in [self.fit.alpha, self.fit.cosine, self.fit.identity_cosine]
            .iter()
            .chain(&self.projection.mean)
            .chain(&self.projection.components)
            .chain(&self.weights)
            .chain(&self.bias)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads [`ColdMap::encode`]'s form back, checking its length and values.
    pub fn decode(bytes: &[u8]) -> Result<Self, ColdError> {
        let corrupt = |why: &str| ColdError::Corrupt(why.to_string());
        if bytes.len() < 25 || &bytes[..4] != COLD_MAGIC {
            return Err(corrupt("not a tfllmer cold-item map"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if u32_at(4) != 1 {
            return Err(corrupt("unknown format version"));
        }
        let (big_d, d) = (u32_at(8) as usize, u32_at(12) as usize);
        let normalize = match bytes[16] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("bad flag")),
        };
        let items = u64::from_le_bytes(bytes[17..25].try_into().map_err(|_| corrupt("short"))?) as usize;
        let count = big_d
            .checked_mul(d + 1)
            .and_then(|p| d.checked_mul(d + 1).and_then(|q| p.checked_add(q)))
            .and_then(|v| v.checked_add(3));
        if d == 0 || count.and_then(|c| c.checked_mul(8)).and_then(|b| b.checked_add(25)) != Some(bytes.len()) {
            return Err(corrupt("length does not match the header"));
        }
        let floats: Vec<f64> =
            bytes[25..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        if floats.iter().any(|v| !v.is_finite()) {
            return Err(corrupt("a value is not finite"));
        }
        let (report, rest) = floats.split_at(3);
        let (mean, rest) = rest.split_at(big_d);
        let (components, rest) = rest.split_at(big_d * d);
        let (weights, bias) = rest.split_at(d * d);
        Ok(ColdMap {
            projection: Projection::from_parts(mean.to_vec(), components.to_vec(), d),
            weights: weights.to_vec(),
            bias: bias.to_vec(),
            normalize,
            fit: FitReport { items, alpha: report[0], cosine: report[1], identity_cosine: report[2] },
        })
    }
}

const COLD_MAGIC: &[u8; 4] = b"TFCM";

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, seed: u64) -> Vec<f64> {
        // Box–Muller over splitmix draws
        let mut state = seed;
        let mut uniform = || (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        (0..n).map(|_| (-2.0 * uniform().max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()).collect()
    }

    fn unit(rows: &mut [f32], d: usize) {
        for row in rows.chunks_exact_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }

    /// An identity projection of width d (μ = 0, W = I).
    fn identity_projection(d: usize) -> Projection {
        let mut w = vec![0.0; d * d];
        (0..d).for_each(|i| w[i * d + i] = 1.0);
        Projection::from_parts(vec![0.0; d], w, d)
    }

    #[test]
    fn an_affine_relation_is_recovered() {
        // trained = init·A + b exactly: the map finds it (α the smallest of
        // the grid) and maps unseen rows as the relation does
        let (n, d) = (400, 6);
        let init: Vec<f32> = gaussian(n * d, 1).into_iter().map(|v| v as f32).collect();
        let a = gaussian(d * d, 2);
        let b = gaussian(d, 3);
        let relate = |z: &[f32]| -> Vec<f32> {
            (0..d).map(|c| (b[c] + (0..d).map(|k| z[k] as f64 * a[k * d + c]).sum::<f64>()) as f32).collect()
        };
        let trained: Vec<f32> = init.chunks_exact(d).flat_map(relate).collect();
        let map = fit(identity_projection(d), &init, &trained, false, 7).unwrap();
        assert!(map.fit.cosine > 0.9999, "{:?}", map.fit);
        assert!(map.fit.identity_cosine < map.fit.cosine);
        let fresh: Vec<f32> = gaussian(d, 99).into_iter().map(|v| v as f32).collect();
        for (p, q) in map.row_of_init(&fresh).iter().zip(relate(&fresh)) {
            assert!((p - q).abs() < 1e-2 * q.abs().max(1.0), "{p} vs {q}");
        }
        // through the projection: the same row for the same (identity-projected, unit) input
        let mut x = fresh.clone();
        unit(&mut x, d);
        assert_eq!(map.row(&x), Some(map.row_of_init(&x)));
        assert_eq!(map.row(&x[1..]), None);
    }

    #[test]
    fn noise_gets_a_strong_ridge() {
        let (n, d) = (300, 8);
        let mut init: Vec<f32> = gaussian(n * d, 4).into_iter().map(|v| v as f32).collect();
        unit(&mut init, d);
        // trained rows unrelated to the init rows: the best map is nearly
        // constant, and it beats the identity on held-out rows
        let mut trained: Vec<f32> = gaussian(n * d, 5).into_iter().map(|v| v as f32 + 0.5).collect();
        unit(&mut trained, d);
        let map = fit(identity_projection(d), &init, &trained, true, 1).unwrap();
        assert!(map.fit.alpha >= 1e-2, "{:?}", map.fit);
        assert!(map.fit.cosine > map.fit.identity_cosine, "{:?}", map.fit);
        // the same seed, the same map
        assert_eq!(fit(identity_projection(d), &init, &trained, true, 1).unwrap(), map);
    }

    #[test]
    fn the_hold_out_is_seeded_nested_and_of_its_share() {
        let ids: Vec<i64> = (-5_000..15_000).collect();
        let count = |share: f64, seed: u64| ids.iter().filter(|&&id| held_out(id, share, seed)).count();
        let tenth = count(0.1, 7) as f64 / ids.len() as f64;
        assert!((tenth - 0.1).abs() < 0.01, "{tenth}");
        assert_eq!(count(0.0, 7), 0);
        assert_eq!(count(1.0, 7), ids.len());
        // nested in the share; another seed, another set
        assert!(ids.iter().all(|&id| !held_out(id, 0.1, 7) || held_out(id, 0.2, 7)));
        let other = ids.iter().filter(|&&id| held_out(id, 0.1, 7) != held_out(id, 0.1, 8)).count();
        assert!(other > ids.len() / 10, "{other}");
        // pinned: stored models name their hold-out by (share, seed), so the
        // selection must never change between versions
        let pinned: Vec<i64> = (1..=100).filter(|&id| held_out(id, 0.1, 7)).collect();
        assert_eq!(pinned, [6, 23, 38, 66, 81, 86, 87]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let d = 4;
        let p = identity_projection(d);
        assert!(matches!(fit(p.clone(), &[0.0; 8], &[0.0; 8], true, 1), Err(ColdError::TooFew { items: 2, .. })));
        assert!(matches!(fit(p.clone(), &[0.0; 80], &[0.0; 84], true, 1), Err(ColdError::Width { .. })));
        let mut nan = vec![0.5f32; 80];
        nan[3] = f32::NAN;
        assert_eq!(fit(p, &nan, &[0.5; 80], true, 1), Err(ColdError::NotFinite));
    }

    #[test]
    fn the_stored_form_round_trips_and_rejects_damage() {
        let (n, d) = (50, 3);
        let init: Vec<f32> = gaussian(n * d, 8).into_iter().map(|v| v as f32).collect();
        let trained: Vec<f32> = gaussian(n * d, 9).into_iter().map(|v| v as f32).collect();
        let projection = Projection::from_parts(vec![0.1, 0.2, 0.3, 0.4], gaussian(4 * d, 10), d);
        let map = fit(projection, &init, &trained, true, 3).unwrap();
        let bytes = map.encode();
        assert_eq!(ColdMap::decode(&bytes).unwrap(), map);
        for cut in 0..bytes.len() {
            assert!(ColdMap::decode(&bytes[..cut]).is_err());
        }
        let mut nan = bytes.clone();
        let at = nan.len() - 8;
        nan[at..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(ColdMap::decode(&nan).is_err());
        let mut flag = bytes;
        flag[16] = 2;
        assert!(ColdMap::decode(&flag).is_err());
    }
}
