//! The cluster link through a broker that asks for TLS or for credentials, as a production
//! NATS does: `--cluster-tls-ca` checks the broker's certificate, `--cluster-creds` signs in
//! with a user JWT and nkey seed. A real `nats-server` on a free loopback port each time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

use crate::cluster::Nats;
use crate::support::*;

fn chat_node(url: &str, name: &str, extra: &[&str]) -> Binary {
    let mut args = vec!["--mode", "chat", "--cluster", url, "--node", name];
    args.extend_from_slice(extra);
    Binary::serve(&args)
}

fn up(node: &Binary) {
    node.wait_stderr("the link up", |l| l.contains("cluster link up"));
}

/// Neither up nor anything but a warning that it is not, over the first-connect warning's
/// delay (2 s) and a little more.
fn never_up(node: &Binary) {
    node.wait_stderr("the not-up warning", |l| {
        l.contains("cluster link not up yet")
    });
    assert!(
        !node
            .stderr_lines()
            .iter()
            .any(|l| l.contains("cluster link up")),
        "{:?}",
        node.stderr_lines()
    );
}

/// A line from a client of `from` reaches a client of `to`.
fn a_line_crosses(from: &Binary, to: &Binary, name: &str) {
    let mut there = chatter(to.addr);
    // Wait for the first client's join to have crossed, so the link carries both ways.
    let mut here = chatter(from.addr);
    expect_bytes(&mut there, format!("* #1@{name} joined\n").as_bytes());
    here.write_all(b"over the link\n").unwrap();
    expect_bytes(
        &mut there,
        format!("<#1@{name}> over the link\n").as_bytes(),
    );
}

#[test]
fn over_tls_the_broker_is_checked_against_the_ca_and_lines_cross() {
    let certs = TempDir::new("cluster-tls");
    let made = Command::new(tcpool_bin())
        .args(["tls", "gen"])
        .arg(&certs.path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let other = TempDir::new("cluster-tls-other");
    let made = Command::new(tcpool_bin())
        .args(["tls", "gen"])
        .arg(&other.path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let file = |dir: &TempDir, name: &str| dir.path.join(name).display().to_string();
    let broker = Nats::on_with(
        port,
        &[
            "--tls",
            "--tlscert",
            &file(&certs, "server.pem"),
            "--tlskey",
            &file(&certs, "server-key.pem"),
        ],
    );
    let ca = file(&certs, "ca.pem");
    let a = chat_node(&broker.url(), "a", &["--cluster-tls-ca", &ca]);
    let b = chat_node(&broker.url(), "b", &["--cluster-tls-ca", &ca]);
    up(&a);
    up(&b);
    a_line_crosses(&a, &b, "a");

    // A CA that did not sign the broker's certificate: no link, said plainly; local chat on.
    let wrong = file(&other, "ca.pem");
    let c = chat_node(&broker.url(), "c", &["--cluster-tls-ca", &wrong]);
    never_up(&c);
    assert!(
        c.stderr_lines()
            .iter()
            .any(|l| l.contains("the NATS handshake fails")),
        "{:?}",
        c.stderr_lines()
    );
    let mut c1 = chatter(c.addr);
    let mut c2 = chatter(c.addr);
    expect_bytes(&mut c1, b"* #2 joined\n");
    c2.write_all(b"still here\n").unwrap();
    expect_bytes(&mut c1, b"<#2> still here\n");
}

/// A JWT signed by `issuer` for `subject`, with `nats` as its NATS claims.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("TCPOOLTEST{}{}", iat, free_port()),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

/// A broker in operator mode with one account, and a credentials file for a user of it.
fn operator_mode(dir: &Path, port: u16) -> (PathBuf, PathBuf) {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "tcpool-test",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "chat",
        serde_json::json!({
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account", "version": 2,
        }),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "node",
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                           "type": "user", "version": 2}),
    );
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\noperator: {operator_jwt}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {}: {account_jwt}\n}}\n",
            account.public_key()
        ),
    )
    .unwrap();
    let creds = dir.join("node.creds");
    let mut file = std::fs::File::create(&creds).unwrap();
    write!(
        file,
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
    .unwrap();
    (config, creds)
}

#[test]
fn with_credentials_the_nodes_sign_in_and_without_them_the_broker_keeps_them_out() {
    let dir = TempDir::new("cluster-creds");
    let port = free_port();
    let (config, creds) = operator_mode(&dir.path, port);
    let broker = Nats::on_with(port, &["-c", &config.display().to_string()]);
    let creds = creds.display().to_string();
    let a = chat_node(&broker.url(), "a", &["--cluster-creds", &creds]);
    let b = chat_node(&broker.url(), "b", &["--cluster-creds", &creds]);
    up(&a);
    up(&b);
    a_line_crosses(&b, &a, "b");

    let outsider = chat_node(&broker.url(), "c", &[]);
    never_up(&outsider);
    // The broker's refusal is in the log, not only the silence.
    assert!(
        outsider
            .stderr_lines()
            .iter()
            .any(|l| l.to_lowercase().contains("authorization")),
        "{:?}",
        outsider.stderr_lines()
    );
}

#[test]
fn a_broken_credentials_or_ca_file_is_refused_before_serving() {
    let dir = TempDir::new("cluster-bad-files");
    let junk = dir.path.join("junk.pem");
    std::fs::write(&junk, "nothing of use\n").unwrap();
    let junk = junk.display().to_string();
    let absent = dir.path.join("absent.creds").display().to_string();
    for (flag, file, message) in [
        ("--cluster-creds", &junk, "not a NATS credentials file"),
        ("--cluster-creds", &absent, "--cluster-creds"),
        ("--cluster-tls-ca", &junk, "--cluster-tls-ca"),
    ] {
        let out = Command::new(tcpool_bin())
            .args(["serve", "--port", "0", "--mode", "chat"])
            .args(["--cluster", "nats://127.0.0.1:1", flag, file])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {file}: {stderr}");
        assert!(stderr.contains(message), "{flag} {file}: {stderr}");
    }
}
