//! The seed's Python client against `tcpool serve`, exactly as it talked to the seed server.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn seed_client_talks_to_tcpool_as_to_the_seed_server() {
    let mut server = Binary::serve(&[]);
    let mut client = Command::new("python3")
        .arg(seed_dir().join("seed_client.py"))
        .arg(server.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = client.stdin.take().unwrap();
    // The seed client reads one line per prompt; it waits for each reply itself.
    stdin
        .write_all("hello\n你好，世界\nquit\n".as_bytes())
        .unwrap();
    drop(stdin);
    let output = wait_output(client, Duration::from_secs(20));
    assert!(output.status.success(), "seed client failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        "client>>server>> hello\nclient>>server>> 你好，世界\nclient>>"
    );
    server.type_line("quit");
    assert_eq!(server.wait_timeout(Duration::from_secs(10)), Some(0));
}

/// Waits for a child with a deadline, killing it if it hangs.
pub fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}
