//! A command's output on the terminal: [`outln!`](crate::outln) and
//! [`errln!`](crate::errln), `println!` and `eprintln!` for commands.
//!
//! Unlike those, they never panic. A standard output whose reader went away
//! (`NAME status | head -1`: the pipe is closed) is what every Unix tool
//! meets, and the command goes on quietly to its end and its exit code, its
//! further lines dropped. Another write error (a full disk under a
//! redirection) is said once on standard error.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output failed otherwise than on a closed pipe
/// and that was said.
static SAID: AtomicBool = AtomicBool::new(false);

/// Writes a line to standard output; see the [module](self). Returns whether
/// it was written.
pub fn print_line(line: fmt::Arguments<'_>) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(format_args!("{line}\n")).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => false,
        Err(e) => {
            if !SAID.swap(true, Ordering::Relaxed) {
                print_error_line(format_args!("cannot write to standard output: {e}"));
            }
            false
        }
    }
}

/// Writes a line to standard error; a failure is ignored (there is nowhere
/// left to say it).
pub fn print_error_line(line: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(format_args!("{line}\n"));
}

/// `println!` for a command's output: never panics on a closed standard
/// output (see [`output`](crate::output)).
///
/// ```
/// pgq_daemon::outln!("{} is running, pid {}", "counter", 42);
/// ```
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}

/// `eprintln!` for a command's messages: never panics on a closed standard
/// error.
///
/// ```
/// pgq_daemon::errln!("error: {}", "something");
/// ```
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::print_error_line(format_args!($($arg)*))
    };
}
