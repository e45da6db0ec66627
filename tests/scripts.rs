//! The repository's scripts, run for real: `scripts/test.sh` (the README's and CI's test
//! command) hands its arguments to `cargo test`, here a stand-in `cargo` that only says what
//! it was asked. The peers are already installed wherever this runs (the script itself put
//! them there), so it goes straight to `cargo test`.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn test_sh_passes_its_arguments_to_cargo_test() {
    let dir = std::env::temp_dir().join(format!("tcpool-fake-cargo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cargo = dir.join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\necho \"cargo $*\"\n").unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&cargo)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test.sh");
    for (args, expected) in [(&["chat::"][..], "cargo test chat::"), (&[], "cargo test")] {
        let mut command = Command::new("bash");
        command.arg(script).args(args).env("PATH", &path);
        let finished = run_to_end(command, Duration::from_secs(60));
        assert_eq!(finished.code, Some(0), "{finished:?}");
        assert_eq!(
            finished.stdout.last().map(String::as_str),
            Some(expected),
            "{finished:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
