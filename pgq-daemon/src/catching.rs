//! Panics that the caller catches: logged at ERROR, not FATAL.
//!
//! The panic hook of [`init_logger`](crate::init_logger) runs when a panic starts,
//! before anyone knows whether it will be caught. Code that catches panics on purpose
//! (a loop that marks a poisoned event failed and goes on) wraps the future it
//! catches them from in [`catching`]; the hook then sees a flag, set on the polling
//! thread for the duration of each poll, and logs the panic at ERROR as
//! `panic caught: ...` instead of FATAL.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

thread_local! {
    /// How many [`catching`] polls are on this thread's stack.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Marks the panics raised while `future` is polled as caught by the caller: the
/// panic hook installed by [`init_logger`](crate::init_logger) logs them at ERROR
/// (`panic caught in thread 'NAME' at FILE:LINE:COL: MESSAGE`) instead of FATAL,
/// and does not pass them on to the hook that was there before (which by default
/// prints them on stderr as if the process were dying).
///
/// Only wrap a future whose panics really are caught, around it or around the task
/// it runs in: with [`FutureExt::catch_unwind`], or as the whole of a task spawned on
/// tokio, whose `JoinHandle` reports a panic as a [`JoinError`]. Any other panic still
/// takes the process down and is logged at FATAL. The mark covers the polls of
/// `future` on the thread that polls it, code it calls included; a task that `future`
/// spawns is polled elsewhere and is not covered.
///
/// The output is `future`'s; it is `Send` when `future` is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A task's panic comes back as a JoinError: log it at ERROR and go on.
/// let task = tokio::spawn(pgq_daemon::catching(async {
///     panic!("one bad job");
/// }));
/// let joined = task.await;
/// assert!(joined.is_err_and(|e| e.is_panic()));
/// # }
/// ```
///
/// [`FutureExt::catch_unwind`]: https://docs.rs/futures/latest/futures/future/trait.FutureExt.html#method.catch_unwind
/// [`JoinError`]: tokio::task::JoinError
pub async fn catching<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| -> Poll<F::Output> {
        let _mark = Mark::set();
        future.as_mut().poll(cx)
    })
    .await
}

/// Whether the panic being raised now, on this thread, is one a [`catching`] caller
/// catches. Read by the panic hook.
pub(crate) fn panic_is_caught() -> bool {
    CATCHING.with(|n| n.get() > 0)
}

/// Sets the mark for one poll; unset when dropped, unwinding included (the hook has
/// run by then: it runs before the unwinding starts).
struct Mark;

impl Mark {
    fn set() -> Mark {
        CATCHING.with(|n| n.set(n.get().saturating_add(1)));
        Mark
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        CATCHING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes on its second poll, recording whether the mark was set on each.
    struct Probe {
        seen: Vec<bool>,
    }

    impl Future for Probe {
        type Output = Vec<bool>;

        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Vec<bool>> {
            self.seen.push(panic_is_caught());
            if self.seen.len() < 2 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut self.seen))
            }
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        assert!(runtime.is_ok());
        runtime.map(|rt| rt.block_on(future)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_mark_is_set_during_every_poll_and_only_then() {
        assert!(!panic_is_caught());
        let seen = block_on(catching(Probe { seen: Vec::new() }));
        assert_eq!(seen, [true, true]);
        assert!(!panic_is_caught());
        let unmarked = block_on(Probe { seen: Vec::new() });
        assert_eq!(unmarked, [false, false]);
    }

    #[test]
    fn the_mark_is_unset_after_a_panic_unwound_out_of_the_poll() {
        let caught = std::panic::catch_unwind(|| {
            block_on(catching(async {
                assert!(panic_is_caught());
                panic!("expected by this test");
            }))
        });
        assert!(caught.is_err());
        assert!(!panic_is_caught());
    }

    #[test]
    fn nested_marks_unset_only_when_the_outermost_poll_ends() {
        let inner_done = block_on(catching(async {
            catching(async {}).await;
            panic_is_caught()
        }));
        assert!(inner_done);
        assert!(!panic_is_caught());
    }
}
