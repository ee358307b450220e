//! Block products on the calling thread: a thin, bounds-checked wrapper of
//! the `gemm` crate (the one candle uses) over strided matrix views.

use super::Real;

/// A row-major matrix view: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// rows × cols stored row by row
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }
    /// the transpose of a rows × cols matrix stored row by row
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }
}

/// dst (m × n, row i at `i * dst_rs`) = a (m × k) · b (k × n), or += when
/// `accumulate`; on the calling thread (callers parallelise over blocks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end = |mat: &Mat<T>, rows: usize, cols: usize| (rows - 1) * mat.rs + (cols - 1) * mat.cs + 1;
    assert!(dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n, "gemm destination too small");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs).take(m).for_each(|row| row[..n].iter_mut().for_each(|v| *v = T::zero()));
        }
        return;
    }
    assert!(a.data.len() >= end(&a, m, k) && b.data.len() >= end(&b, k, n), "gemm operand too small");
    // SAFETY: the asserts above keep every element gemm touches inside the slices
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_a_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..n * k).map(|i| (i % 5) as f64 - 2.0).collect();
        // a · bᵀ with b stored n × k
        let mut c = vec![1.0; m * n];
        gemm(&mut c, n, m, n, k, Mat::rows(&a, k), Mat::transposed(&b, k), true);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum::<f64>();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
