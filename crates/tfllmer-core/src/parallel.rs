//! Minimal fork-join for the maths, safe inside a PostgreSQL backend.
//!
//! PostgreSQL's signal handlers assume they run on the backend's main
//! thread, so helper threads start with every signal blocked, and they never
//! call back into PostgreSQL: the closures given here are pure computation.
//! With `threads <= 1` everything runs on the calling thread.

use std::thread::{Scope, ScopedJoinHandle};

/// Runs `a` on a helper thread and `b` on this one, returning both results.
pub fn join<RA: Send, RB>(threads: usize, a: impl FnOnce() -> RA + Send, b: impl FnOnce() -> RB) -> (RA, RB) {
    if threads < 2 {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let helper = spawn_without_signals(scope, a);
        let rb = b();
        let ra = helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (ra, rb)
    })
}

/// Runs part 0 on this thread (`first`) and parts 1..parts on helpers
/// (`rest(part)`); returns the results in part order.
pub fn run_parts<R: Send>(parts: usize, first: impl FnOnce() -> R, rest: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if parts <= 1 {
        return vec![first()];
    }
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..parts)
            .map(|p| {
                spawn_without_signals(scope, {
                    let rest = &rest;
                    move || rest(p)
                })
            })
            .collect();
        let mut results = vec![first()];
        for h in helpers {
            results.push(h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        results
    })
}

/// Splits `items` into up to `threads` contiguous parts whose lengths are
/// multiples of `unit` (rows of a row-major buffer, say) and runs
/// `work(first item index, part)` on each, on helpers for all but the first.
pub fn for_each_part<T: Send>(threads: usize, items: &mut [T], unit: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let units = items.len() / unit.max(1);
    let parts = threads.clamp(1, units.max(1));
    if parts == 1 {
        work(0, items);
        return;
    }
    let size = units.div_ceil(parts) * unit;
    std::thread::scope(|scope| {
        let mut chunks = items.chunks_mut(size).enumerate();
        let first = chunks.next();
        let helpers: Vec<_> = chunks
            .map(|(i, chunk)| {
                spawn_without_signals(scope, {
                    let work = &work;
                    move || work(i * size, chunk)
                })
            })
            .collect();
        if let Some((_, chunk)) = first {
            work(0, chunk);
        }
        for h in helpers {
            h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
}

fn spawn_without_signals<'scope, 'env, R: Send + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    f: impl FnOnce() -> R + Send + 'scope,
) -> ScopedJoinHandle<'scope, R> {
    // a new thread inherits the creating thread's mask: spawn it with every
    // signal blocked, so there is no moment when the helper can take one
    with_signals_blocked(|| scope.spawn(f))
}

/// Runs `f` with every signal blocked on this thread, then restores the
/// mask: threads started inside inherit the blocked mask.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(unix)]
    // SAFETY: sigset_t is plain data (zeroed is a valid empty set); the
    // mask calls only touch this thread's mask and the local sets
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
    #[cfg(not(unix))]
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_returns_both_results_for_any_thread_count() {
        for threads in [0, 1, 2, 8] {
            assert_eq!(join(threads, || 6 * 7, || "here"), (42, "here"));
        }
    }

    #[test]
    fn run_parts_keeps_part_order() {
        for parts in [0, 1, 2, 5] {
            let got = run_parts(parts, || 0, |p| p * 10);
            let want: Vec<usize> = (0..parts.max(1)).map(|p| p * 10).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn parts_cover_every_item_once() {
        for threads in [1, 2, 3, 16] {
            let mut v: Vec<usize> = vec![0; 10];
            for_each_part(threads, &mut v, 1, |first, part| {
                for (k, x) in part.iter_mut().enumerate() {
                    *x = first + k + 1;
                }
            });
            assert_eq!(v, (1..=10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn parts_respect_the_unit() {
        let mut v: Vec<usize> = vec![0; 12];
        for_each_part(2, &mut v, 4, |first, part| {
            assert_eq!(first % 4, 0);
            assert_eq!(part.len() % 4, 0);
            part.iter_mut().for_each(|x| *x = first);
        });
        assert_eq!(v, [0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8]);
    }

    #[test]
    fn helper_threads_block_signals() {
        let blocked = join(
            2,
            // SAFETY: reads this thread's signal mask into a local set
            || unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
                libc::sigismember(&mask, libc::SIGINT) == 1 && libc::sigismember(&mask, libc::SIGUSR1) == 1
            },
            || (),
        )
        .0;
        assert!(blocked);
        // and the calling thread's mask is unchanged
        // SAFETY: as above, for the calling thread
        let here = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, libc::SIGUSR1)
        };
        assert_eq!(here, 0);
    }
}
