//! Row normalisations written once: the L2 normalisation of item rows
//! e / sqrt(‖e‖² + 1e-24) (the model's item table, the scorer's tables, and
//! the public [`normalize_rows`] the extension builds item tables with),
//! and layer norm's moments and forward row.

use super::{dispatch, sum_lanes, Real};

/// sqrt(‖row‖² + 1e-24): the divisor of the item table's normalisation
/// (1e-12 for a zero row, which so stays zero).
#[inline(always)]
pub(crate) fn row_norm<T: Real>(row: &[T]) -> T {
    (sum_lanes(row, |v| v * v) + T::from(1e-24).unwrap_or_else(T::zero)).sqrt()
}

/// row ← row / sqrt(‖row‖² + 1e-24).
#[inline(always)]
pub(crate) fn normalize_row<T: Real>(row: &mut [T]) {
    let n = row_norm(row);
    row.iter_mut().for_each(|v| *v /= n);
}

/// Scales each `dim`-wide row of `rows` (row-major, rows.len() / dim rows)
/// to unit length as the model's item table does: e / sqrt(‖e‖² + 1e-24),
/// so zero rows stay zero. The same arithmetic as the model's forward pass
/// in f32, so a table normalised here equals the one the model uses.
///
/// # Panics
/// When `dim` is 0 or `rows.len()` is not a multiple of it.
pub fn normalize_rows(rows: &mut [f32], dim: usize) {
    assert!(dim > 0 && rows.len().is_multiple_of(dim), "{} values are not rows of {dim}", rows.len());
    dispatch(
        #[inline(always)]
        || rows.chunks_exact_mut(dim).for_each(normalize_row),
    )
}

/// A row's mean and 1 / sqrt(var + eps) (biased variance), as layer norm
/// uses them.
#[inline(always)]
pub(crate) fn moments<T: Real>(row: &[T], eps: T) -> (T, T) {
    let d = T::from(row.len()).unwrap_or_else(T::one);
    let mean = sum_lanes(row, |v| v) / d;
    let var = sum_lanes(row, |v| (v - mean) * (v - mean)) / d;
    // one division per row, not per value (within an ulp of dividing)
    (mean, T::one() / (var + eps).sqrt())
}

/// Layer norm of one row into `out`: (x − mean) / sqrt(var + eps) · w + b.
#[inline(always)]
pub(crate) fn layer_norm_row<T: Real>(row: &[T], w: &[T], b: &[T], eps: T, out: &mut [T]) {
    let (mean, inv) = moments(row, eps);
    for (((o, &v), &w), &b) in out.iter_mut().zip(row).zip(w).zip(b) {
        *o = (v - mean) * inv * w + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_unit_length_and_zero_rows_stay_zero() {
        let mut rows = vec![3.0f32, 4.0, 0.0, 0.0, 0.0, 0.0, 1e-13, 0.0, 0.0];
        normalize_rows(&mut rows, 3);
        assert_eq!(&rows[..6], &[0.6, 0.8, 0.0, 0.0, 0.0, 0.0]);
        // a tiny row is divided by sqrt(‖e‖² + 1e-24), not by its length
        assert!((rows[6] - 1e-13 / (1e-26f64 + 1e-24).sqrt() as f32).abs() < 1e-6, "{}", rows[6]);
    }

    #[test]
    #[should_panic]
    fn rows_must_be_whole() {
        normalize_rows(&mut [1.0; 5], 2);
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_and_unit_variance() {
        let row: Vec<f64> = (0..37).map(|i| ((i * 7 % 13) as f64 - 6.0) * 1.5).collect();
        let (w, b) = (vec![1.0; 37], vec![0.0; 37]);
        let mut out = vec![0.0; 37];
        layer_norm_row(&row, &w, &b, 0.0, &mut out);
        let mean = out.iter().sum::<f64>() / 37.0;
        let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 37.0;
        assert!(mean.abs() < 1e-14 && (var - 1.0).abs() < 1e-13, "mean {mean}, variance {var}");
    }
}
