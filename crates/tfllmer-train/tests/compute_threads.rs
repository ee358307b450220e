//! Its own test binary: the global pool must be built here, before anything
//! else in the process touches rayon.

use tfllmer_train::threads::init_compute_threads;

fn sigint_blocked_here() -> bool {
    // SAFETY: reads this thread's signal mask into a local (zeroed = empty) set
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
        libc::sigismember(&mask, libc::SIGINT) == 1 && libc::sigismember(&mask, libc::SIGTERM) == 1
    }
}

#[test]
fn pool_threads_have_every_signal_blocked() {
    assert_eq!(init_compute_threads(2), 2);
    assert_eq!(init_compute_threads(5), 2, "the pool is built once");
    assert_eq!(std::env::var("RAYON_NUM_THREADS").as_deref(), Ok("2"));
    let blocked: Vec<bool> = rayon::broadcast(|_| sigint_blocked_here());
    assert_eq!(blocked, vec![true, true]);
    assert!(!sigint_blocked_here(), "the caller's own mask is restored");

    // every thread the computation starts, now or later, blocks the signals:
    // only this test's thread and the process's main thread may take them
    let x = candle_core::Tensor::ones((1024, 512), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let _ = (x.exp().unwrap() + &x).unwrap().matmul(&x.t().unwrap()).unwrap();
    // SAFETY: gettid has no preconditions
    let me = unsafe { libc::gettid() }.to_string();
    let main = std::process::id().to_string();
    let mut helpers = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        if tid == me || tid == main {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
        let Some(mask) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) else { continue };
        let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
        let (sigint, sigterm) = (1u64 << (libc::SIGINT - 1), 1u64 << (libc::SIGTERM - 1));
        assert!(mask & sigint != 0 && mask & sigterm != 0, "thread {tid} can take SIGINT/SIGTERM (SigBlk {mask:x})");
        helpers += 1;
    }
    assert!(helpers >= 1, "no compute threads found");
}
