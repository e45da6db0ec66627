//! `tcpool completions SHELL`: the shell's completion script for every command and flag,
//! generated from the same definitions as `--help`, on stdout.

use std::process::ExitCode;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

/// `tcpool completions` flags.
#[derive(Debug, Args)]
#[command(after_help = super::examples(EXAMPLES))]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

const EXAMPLES: &str = "
  # Bash, in this shell only
  source <(tcpool completions bash)
  # Bash, in every new shell (bash-completion loads it at the first TAB)
  mkdir -p ~/.local/share/bash-completion/completions
  tcpool completions bash > ~/.local/share/bash-completion/completions/tcpool
  # Zsh, with `fpath=(~/.zfunc $fpath)` before compinit in ~/.zshrc
  mkdir -p ~/.zfunc && tcpool completions zsh > ~/.zfunc/_tcpool
  # Fish
  mkdir -p ~/.config/fish/completions
  tcpool completions fish > ~/.config/fish/completions/tcpool.fish";

/// Prints the script.
pub(crate) fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "tcpool",
        &mut script,
    );
    super::print_stdout(&script, "the completion script")?;
    Ok(ExitCode::SUCCESS)
}
