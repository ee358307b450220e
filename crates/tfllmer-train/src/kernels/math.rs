//! Elementwise functions written without branches or calls, so loops over
//! slices of them vectorise: exp and erf for f32 (our own polynomial fits),
//! the logistic sigmoid and tanh built on that exp, and GELU for either
//! float type through [`Real`]. f64 uses libm's exp and erf (candle's
//! `erf_f64`): one erf of ours, the exact one for f64.

use super::Real;

/// exp(x) for f32 with a relative error below 3e-7 (Cephes' polynomial on
/// [−ln2/2, ln2/2], scaled by 2ⁿ through the exponent bits); 0 below −87.3
/// (where expf turns subnormal), +∞ above 88 (where it is above 1.6e38).
/// Branch-free and without fma calls, so loops over slices vectorise.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let bits = (t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    let e = poly * f32::from_bits(bits as u32);
    if x < -87.3 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else {
        e
    }
}

/// erf(x) for f32 without branches or calls, so GELU's loops vectorise
/// (libm's erff is a branchy call per value, and was the largest single
/// cost of a scoring pass). Our own Chebyshev fits (mpmath, 40 digits):
/// erf(x)/x as a polynomial in x² on |x| ≤ 1 (fit error 1.2e-9), and
/// erfc(x)·exp(x²) as a polynomial in 1/x on 1 ≤ |x| ≤ 4 (4.7e-9; beyond
/// 3.92 erf rounds to ±1 in f32). Within 1.5e-7 of the exact erf and 2e-7
/// of libm's erff (test).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
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

/// The logistic function 1 / (1 + e⁻ˣ), from the vectorisable exp.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (exp_f32(-x) + 1.0)
}

/// tanh(x) = 1 − 2 / (e²ˣ + 1), from the vectorisable exp (absolute error
/// below 3e-7).
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

/// GELU with the exact erf, 0.5 · x · (1 + erf(x/√2)), as candle's
/// `gelu_erf` (f32: our erf, within 2e-7 of libm's).
#[inline(always)]
pub(crate) fn gelu<T: Real>(x: T) -> T {
    let half = T::from(0.5).unwrap_or_else(T::zero);
    let frac = T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    ((x * frac).erf() + T::one()) * half * x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_close_to_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(1e9), f32::INFINITY);
    }

    #[test]
    fn erf_is_libms_to_f32_precision() {
        let (mut worst_exact, mut worst_libm) = (0.0f64, 0.0f64);
        let mut x = -7.0f32;
        while x < 7.0 {
            let ours = erf_f32(x) as f64;
            worst_exact = worst_exact.max((ours - candle_core::cpu::erf::erf_f64(x as f64)).abs());
            worst_libm = worst_libm.max((ours - candle_core::cpu::erf::erf_f32(x) as f64).abs());
            x += 1.17e-4;
        }
        assert!(worst_exact < 1.5e-7 && worst_libm < 2e-7, "erf off by {worst_exact} (libm: {worst_libm})");
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.842_700_8), (-1.0, -0.842_700_8), (10.0, 1.0), (f32::INFINITY, 1.0)]
        {
            assert!((erf_f32(x) - want).abs() < 1e-7, "erf({x}) = {}", erf_f32(x));
        }
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        // f64 uses the exact erf
        assert_eq!(Real::erf(0.5f64), candle_core::cpu::erf::erf_f64(0.5));
    }

    #[test]
    fn sigmoid_tanh_and_gelu_are_close_to_the_exact_ones() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let e = x as f64;
            assert!((sigmoid(x) as f64 - 1.0 / (1.0 + (-e).exp())).abs() < 3e-7, "sigmoid({x})");
            assert!((tanh(x) as f64 - e.tanh()).abs() < 3e-7, "tanh({x})");
            let exact = 0.5 * e * (1.0 + candle_core::cpu::erf::erf_f64(e / 2f64.sqrt()));
            assert!((gelu(x) as f64 - exact).abs() < 2e-6 * (1.0 + exact.abs()), "gelu({x})");
            assert!((gelu(e) - exact).abs() < 1e-15 * (1.0 + exact.abs()), "gelu({e}) in f64");
            x += 0.013;
        }
    }
}
