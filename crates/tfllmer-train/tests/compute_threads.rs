//! Its own test binary: the global pool must be built here, before anything
//! else in the process touches rayon.

use tfllmer_train::threads::init_compute_threads;

fn sigint_blocked_here() -> bool {
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
}
