//! The one run-time CPU-feature dispatch of tfllmer (both crates use it).
//!
//! The portable x86-64 build targets SSE2 only. [`dispatch`] runs a closure
//! inlined into code compiled for the widest instruction set this CPU has
//! (AVX-512 = x86-64-v4, else AVX2 + FMA = x86-64-v3, else the portable
//! scalar build), so the plain loops in it vectorise with wide registers.
//! It is built on the `pulp` crate (the dispatch faer and gemm use), which
//! detects the CPU once and caches the answer.
//!
//! The closure must be `#[inline(always)]` for its loops to be compiled
//! for the wider instruction set (a call into a separately compiled
//! function keeps that function's SSE2 code).
//!
//! Enabling FMA as a target feature does not turn `a * b + c` into a fused
//! multiply-add: Rust does not allow floating-point contraction, so code
//! without explicit `mul_add` calls computes bit for bit the same on every
//! path. [`paths`] lists every path this CPU can run, for tests that check
//! exactly that.

use pulp::Arch;

/// One instruction-set path: a name ("scalar", "x86-64-v3 (AVX2+FMA)",
/// "x86-64-v4 (AVX-512)" or "native" on other architectures) and the code
/// to run a closure on it.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    name: &'static str,
    arch: Arch,
}

impl Path {
    /// The path's name, for test messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs `f` inlined into code compiled for this path's instruction set.
    #[inline(always)]
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        self.arch.dispatch(f)
    }
}

/// Runs `f` compiled for the widest instruction set this CPU has (see the
/// module doc); mark the closure `#[inline(always)]`.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    Arch::new().dispatch(f)
}

/// Every path this CPU can run, narrowest first: the scalar (portable)
/// build always, then each wider instruction set the CPU has. The last one
/// is the path [`dispatch`] takes.
pub fn paths() -> Vec<Path> {
    let mut paths = vec![Path { name: "scalar", arch: Arch::Scalar }];
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::x86::{V3, V4};
        if let Some(v3) = V3::try_new() {
            paths.push(Path { name: "x86-64-v3 (AVX2+FMA)", arch: Arch::V3(v3) });
        }
        if let Some(v4) = V4::try_new() {
            paths.push(Path { name: "x86-64-v4 (AVX-512)", arch: Arch::V4(v4) });
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    paths.push(Path { name: "native", arch: Arch::new() });
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ a·b + c the way the kernels write it (no `mul_add`): the same bits
    /// on every path, FMA or not.
    #[inline(always)]
    fn multiply_add(a: &[f64], b: &[f64], c: &[f64], out: &mut [f64]) {
        for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = x * y + z;
        }
    }

    #[test]
    fn every_path_computes_the_scalar_paths_bits() {
        let n = 1003;
        let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.731).sin() * 1e3).collect();
        let b: Vec<f64> = (0..n).map(|i| (i as f64 * 1.37).cos() / 3.0).collect();
        let c: Vec<f64> = (0..n).map(|i| -(a[i] * b[i]) * (1.0 + 1e-9 * i as f64)).collect();
        let run = |p: &Path| {
            let mut out = vec![0.0; n];
            p.run(
                #[inline(always)]
                || multiply_add(&a, &b, &c, &mut out),
            );
            out
        };
        let paths = paths();
        assert_eq!(paths[0].name(), "scalar");
        let scalar = run(&paths[0]);
        // a fused multiply-add would keep a·b unrounded: c nearly cancels it,
        // so the difference would show in most values
        let fused: Vec<f64> = (0..n).map(|i| a[i].mul_add(b[i], c[i])).collect();
        assert!(scalar.iter().zip(&fused).filter(|(x, y)| x != y).count() > n / 2);
        for p in &paths[1..] {
            let out = run(p);
            assert!(out.iter().zip(&scalar).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs", p.name());
        }
        assert_eq!(dispatch(|| 7), 7);
    }
}
