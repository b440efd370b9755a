//! meshcast command-line entry point: parse arguments, run the command.
//!
//! `serve` loads the config, binds the node and waits for Ctrl-C or SIGTERM;
//! the other commands work on the repo directly (see `cli.rs`).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    tune_malloc();
    let args = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format() {
        // One object per line (timestamp, level, target, fields, spans),
        // which log shippers (Vector, Promtail, Fluent Bit) read as is.
        meshcast::config::LogFormat::Json => logs.json().init(),
        // Colour codes only help a person at a terminal; log files stay plain.
        meshcast::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        // The reader went away (`meshcast pin ls | head`): what it wanted
        // was written, as for any Unix filter.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Bounds what glibc's malloc keeps of freed memory. By default each thread
/// that allocates gets an arena of its own (up to 8 per core), and each
/// keeps what is freed in it; connection buffers allocated on one runtime
/// worker and freed on another leave every arena holding its high-water
/// mark, and the mmap threshold rises with each large block freed, so that
/// later large buffers come from the arenas too and are never returned.
/// Two arenas and a fixed 128 KiB threshold (larger blocks are mapped and
/// unmapped when freed) keep a node serving 200 HLS clients about 10 MiB
/// smaller (bench/live.py, phase 2), at no measurable cost in CPU.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters and takes no pointers;
    // it runs first in main, before any other thread exists. A refused
    // setting (0 returned) leaves glibc's default, which is only bigger.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Whether writing our output failed because its reader closed the pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes, as `{:#}` prints them, but without a cause the
/// text so far already shows: most of the library's errors say their source
/// in their own message and also return it from `source()`.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{is_broken_pipe, report};

    #[derive(Debug, thiserror::Error)]
    #[error("outer ({source})")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_shown_are_not_repeated() {
        let e = anyhow::Error::new(Outer {
            source: std::io::Error::other("inner"),
        });
        assert_eq!(report(&e), "outer (inner)");
        let e = e.context("reading x");
        assert_eq!(report(&e), "reading x: outer (inner)");
        let e = anyhow::Error::new(std::io::Error::other("bare")).context("ctx");
        assert_eq!(report(&e), "ctx: bare");
    }

    #[test]
    fn a_closed_pipe_is_no_error_to_report() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(
            &anyhow::Error::new(pipe).context("write a pin")
        ));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_broken_pipe(&anyhow::Error::new(other)));
    }

    #[test]
    fn listen_flags_take_host_names() {
        use clap::Parser;
        let args = [
            "meshcast",
            "serve",
            "--http",
            "localhost:8080",
            "--rtmp",
            "[::]:1935",
        ];
        assert!(crate::cli::Cli::try_parse_from(args).is_ok());
        let bad = ["meshcast", "serve", "--http", "localhost"];
        let err = crate::cli::Cli::try_parse_from(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
