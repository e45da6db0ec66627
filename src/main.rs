//! The `tcpool` binary: parses the command line, sets up logging, and runs a subcommand
//! (`src/cli/`), each a thin layer over the library. Errors become exit codes: 1 when a
//! command cannot start, clap's own code for bad flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// A multi-client TCP server, client and load generator.
#[derive(Debug, Parser)]
#[command(name = "tcpool", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve many clients at once: echo (the default), chat or manual replies.
    Serve(Box<cli::serve::ServeArgs>),
    /// Talk to a server line by line, like the seed's client (full duplex on a terminal).
    Talk(cli::talk::TalkArgs),
    /// Load-test a TCP server (echo by default, or any request/response protocol):
    /// throughput, exact latency percentiles, checked replies; merge and plot reports.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // `serve` sets up logging itself: on a terminal, log lines go above its prompt.
        Command::Serve(args) => {
            cli::terminal::hold_stop_signal();
            cli::serve::run(*args)
        }
        Command::Talk(args) => {
            cli::terminal::hold_stop_signal();
            cli::init_logging(None);
            cli::talk::run(args)
        }
        Command::Bench(args) => {
            cli::init_logging(None);
            cli::bench::run(args)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            cli::terminal::restore();
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
