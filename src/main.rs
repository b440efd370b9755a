//! meshcast command-line entry point: parse arguments, run the command.
//!
//! `serve` loads the config, binds the node and waits for Ctrl-C or SIGTERM;
//! the other commands work on the repo directly (see `cli.rs`).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; log files stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
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
    use super::report;

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
}
