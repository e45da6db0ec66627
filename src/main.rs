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
    /// Which log lines to write (to stderr): error, warn, info, debug or trace, or a full
    /// env_logger filter such as `info,tcpool::server::worker=debug`. Wins over RUST_LOG when
    /// both are given [default: RUST_LOG if set, else info].
    #[arg(long, global = true, value_name = "LEVEL", value_parser = cli::parse_log_level)]
    log_level: Option<cli::LogLevel>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve many clients at once: echo (the default), chat or manual replies.
    Serve(cli::serve::ServeArgs),
    /// Talk to a server line by line, like the seed's client (full duplex on a terminal).
    Talk(cli::talk::TalkArgs),
    /// Load-test a TCP server (echo by default, or any request/response protocol):
    /// throughput, exact latency percentiles, checked replies; merge and plot reports.
    Bench(cli::bench::BenchArgs),
    /// Print the completion script for a shell: bash, zsh, fish, elvish or powershell.
    Completions(cli::completions::CompletionsArgs),
    /// Print a manual page in roff (`tcpool man bench | man -l -`), or write every page into
    /// a directory (--dir).
    Man(cli::man::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = cli.log_level.as_ref();
    let result = match cli.command {
        // `serve` sets up logging itself: on a terminal, log lines go above its prompt.
        Command::Serve(args) => {
            cli::terminal::hold_stop_signal();
            cli::serve::run(args, log_level)
        }
        Command::Talk(args) => {
            cli::terminal::hold_stop_signal();
            cli::init_logging(None, log_level);
            cli::talk::run(args)
        }
        Command::Bench(args) => {
            cli::init_logging(None, log_level);
            cli::bench::run(args)
        }
        Command::Completions(args) => cli::completions::run(args),
        Command::Man(args) => cli::man::run(args),
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
