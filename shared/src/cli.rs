//! Standard output of the command-line tools (`threadline-gateway`, `-aggregator`, `-sim`,
//! `-demo`, `-datagen`).
//!
//! [`outln!`](crate::outln) and [`out!`](crate::out) print like `println!` / `print!`, except
//! when stdout is a closed pipe (`threadline-gateway check … | head`): then the process ends
//! quietly with **exit status 0** instead of panicking with "failed printing to stdout: Broken
//! pipe". The reader had what it wanted; that is not a failure of the command (the convention
//! of ripgrep and most Rust tools; Rust ignores SIGPIPE, so the shell's 141 would need unsafe
//! code to restore the signal). Any other write error (a full disk behind `> file`) is reported
//! on stderr with exit status 1.

use std::fmt;
use std::io::{self, Write as _};

/// Writes to stdout; see the module docs for a closed or failing stdout.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        drop(out);
        stdout_failed(&e);
    }
}

fn stdout_failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(io::stderr(), "cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `println!` for the command-line tools: a closed stdout ends the process quietly (exit 0).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the command-line tools: a closed stdout ends the process quietly (exit 0).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}
