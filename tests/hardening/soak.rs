//! The soak script, short run.

use super::*;

/// CI SHORT RUN of the soak script (about 25 s): `scripts/soak.sh 20` against the test
/// build's binary. The long run is documented in the book, docs/src/hardening.md.
#[test]
fn soak_script_short_run_ci() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/soak.sh");
    let mut soak = Command::new("bash");
    soak.arg(&script).arg("20").env("TCPOOL_BIN", tcpool_bin());
    let Finished {
        code,
        stdout,
        stderr,
    } = run_to_end(soak, Duration::from_secs(90));
    for line in stdout.iter().filter(|l| l.starts_with("soak:")) {
        println!("{line}");
    }
    assert_eq!(
        code,
        Some(0),
        "soak failed:\n{}\n{}",
        stdout.join("\n"),
        stderr.join("\n")
    );
    assert!(stdout.iter().any(|l| l == "soak: PASS"), "{stdout:#?}");
}
