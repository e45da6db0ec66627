//! The `tcpool` binary: parses the command line, sets up logging, and runs a subcommand
//! (`src/cli/`), each a thin layer over the library. Errors become exit codes: 1 when a
//! command cannot start, clap's own code for bad flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// A multi-client TCP server, client and load generator.
#[derive(Debug, Parser)]
#[command(
    name = "tcpool",
    version,
    about,
    propagate_version = true,
    after_help = cli::examples(EXAMPLES)
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Which log lines to write (to stderr): error, warn, info, debug or trace, or a full
    /// env_logger filter such as `info,tcpool::server::worker=debug`. Wins over RUST_LOG when
    /// both are given [default: RUST_LOG if set, else info].
    #[arg(long, global = true, value_name = "LEVEL", value_parser = cli::parse_log_level,
          display_order = 900)]
    log_level: Option<cli::LogLevel>,
}

const EXAMPLES: &str = "
  # Echo on 127.0.0.1:8900 until Ctrl-C
  tcpool serve
  # From another terminal: talk to it, then load it for 5 seconds
  tcpool talk
  tcpool bench -d 5s
  # The server again, with a debug line for each session opened and closed
  tcpool serve --log-level debug";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve many clients at once: echo (the default), chat or manual replies.
    ///
    /// Listens on 127.0.0.1:8900 unless told otherwise, and reads operator commands on stdin
    /// (/help, /list, /stats, /kick ID, quit). Ctrl-C, SIGTERM or `quit` shut it down
    /// gracefully, every client told `quit`, and print a summary; a second Ctrl-C exits at
    /// once. Without a terminal attached, SIGHUP hands the listening sockets over to a new
    /// copy of the program, for an upgrade that drops no client.
    Serve(Box<cli::serve::ServeArgs>),
    /// Talk to a server line by line: type at a prompt, or pipe lines in.
    ///
    /// Every message from the server is printed as `server>> TEXT`. On a terminal, messages
    /// appear the moment they arrive, above the prompt (so a chat works); `quit` or Ctrl-D
    /// leaves. Piped, each line is sent once the reply to the one before came or
    /// --reply-timeout passed (or all at once, with --no-wait). Exit code 1 when the server is
    /// full and answers `busy`.
    Talk(cli::talk::TalkArgs),
    /// Load-test a TCP server (echo by default, or any request/response protocol):
    /// throughput, exact latency percentiles, checked replies; merge and plot reports.
    ///
    /// All the connections are opened first; then the load runs for -d (10 s) or -n
    /// messages, and the report gives throughput, latency percentiles and errors by kind (an
    /// echo or --expect reply that differs is a `mismatch`). Exit code 1 when any error
    /// happened, so that a script notices;
    /// Ctrl-C stops the run early and still prints the report. `bench merge` and `bench plot`
    /// work on reports saved with --json.
    Bench(cli::bench::BenchArgs),
    /// Make certificates for tests: a CA, a server and a client certificate, and broken
    /// ones (`tcpool tls gen DIR`).
    Tls(cli::tls::TlsArgs),
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
            cli::serve::run(*args, log_level)
        }
        Command::Talk(args) => {
            cli::terminal::hold_stop_signal();
            cli::init_logging(None, log_level);
            let result = cli::talk::run(args);
            cli::flush_logs();
            result
        }
        Command::Bench(args) => {
            cli::init_logging(None, log_level);
            let result = cli::bench::run(args);
            cli::flush_logs();
            result
        }
        Command::Tls(args) => cli::tls::run(args),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Options with no default to state: a file written only when asked for, and the request
    /// and reply of a --send load, whose help says which go together.
    const NO_DEFAULT: &[&str] = &[
        "hdr_log",
        "plot",
        "send_file",
        "expect",
        "until",
        "reply_size",
        "first_message",
    ];

    /// Every command of the tree, built (so that global flags are on each), with its name.
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(command: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            let name = command.get_bin_name().unwrap_or(command.get_name());
            out.push((name.to_owned(), command.clone()));
            for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
                walk(sub, out);
            }
        }
        let mut root = Cli::command();
        root.build();
        let mut out = Vec::new();
        walk(&root, &mut out);
        out
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_says_its_default_and_every_duration_and_size_its_unit() {
        let mut checked = 0;
        for (name, command) in commands() {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
                if !takes_value || arg.is_required_set() || matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let has_default = !arg.get_default_values().is_empty()
                    || help.contains("[default: ")
                    || NO_DEFAULT.contains(&id);
                assert!(has_default, "{name} --{id}: no default said: {help}");
                let value = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|n| n.as_str())
                    .unwrap_or_default();
                if matches!(value, "DURATION" | "TIME" | "SIZE") {
                    assert!(help.contains("bare = "), "{name} --{id}: no unit: {help}");
                }
                checked += 1;
            }
        }
        // The walk reached the options of every command (serve alone has over 20).
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn every_command_ends_its_help_with_examples() {
        for (name, command) in commands() {
            let after = command.get_after_help().map(ToString::to_string);
            let after = after.unwrap_or_default();
            assert!(after.starts_with("Examples:\n  # "), "{name}: {after}");
            let examples = after.lines().filter(|l| l.starts_with("  # ")).count();
            assert!((3..=4).contains(&examples), "{name}: {examples} examples");
            let mut lines = after.lines().skip(1);
            assert!(
                lines.all(|l| l.starts_with("  ") && !l.ends_with(' ')),
                "{name}: {after}"
            );
        }
    }
}
