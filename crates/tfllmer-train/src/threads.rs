//! The compute threads candle uses (its CPU kernels and matrix products run
//! on rayon's global pool). Inside PostgreSQL they must never receive the
//! server's signals, which assume the process's main thread: the pool is
//! built explicitly, once per process, from a thread with every signal
//! blocked, so its threads inherit the blocked mask.

use std::sync::OnceLock;

use tfllmer_core::parallel::with_signals_blocked;

static POOL_THREADS: OnceLock<usize> = OnceLock::new();

/// Builds the global pool with `threads` threads (at least 1) unless this
/// process already has one; returns the pool's size. Call it before the
/// first tensor operation, from the thread that owns the process.
pub fn init_compute_threads(threads: usize) -> usize {
    *POOL_THREADS.get_or_init(|| {
        let threads = threads.max(1);
        // candle sizes its matrix products from this variable (read on
        // every call), rayon its default pool
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        let built = with_signals_blocked(|| {
            let built = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
            // candle starts more threads lazily (a spinning pool for large
            // element-wise ops, a private rayon pool): start them now, with
            // the blocked mask
            let _ = warm_up_candle_pools();
            built
        });
        match built {
            Ok(()) => threads,
            // someone built it first (not through here): report its size
            Err(_) => rayon::current_num_threads(),
        }
    })
}

/// Runs one op of each kind that makes candle start a thread pool.
fn warm_up_candle_pools() -> candle_core::Result<()> {
    use candle_core::{DType, Device, Tensor};
    let x = Tensor::ones((512, 256), DType::F32, &Device::Cpu)?; // 128K elements
    let y = (x.exp()? + &x)?;
    let _ = y.sum_keepdim(1)?.to_dtype(DType::F64)?;
    let _ = y.matmul(&y.t()?)?;
    let _ = candle_nn::ops::softmax_last_dim(&y)?;
    let _ = y.index_select(&Tensor::arange(0u32, 512, &Device::Cpu)?, 0)?;
    Ok(())
}
