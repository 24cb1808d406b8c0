//! The http check over https: a certificate from a private CA (trusted through `http-ca-file`)
//! that expires in 30, 10 and 2 days is ok, warns and fails; an untrusted one fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Daemon, toml_path, toml_str};
use crate::health_support::{HttpServer, Stack, health_now};

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl (apt-get install openssl): {e}"));
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA in `dir` (ca.pem, ca.key).
pub fn make_ca(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "60",
            "-subj",
            "/CN=atpred test CA",
        ],
    );
    dir.join("ca.pem")
}

/// A certificate for 127.0.0.1 signed by the CA, valid for `days`: (chain, key).
pub fn make_leaf(dir: &Path, days: u32) -> (PathBuf, PathBuf) {
    let (key, csr, pem) = (
        format!("leaf{days}.key"),
        format!("leaf{days}.csr"),
        format!("leaf{days}.pem"),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            &days.to_string(),
            "-extfile",
            "leaf.ext",
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// The http check's status and message against an https server with a `days` certificate.
fn check_https(stack: &Stack, ca: Option<&Path>, days: u32) -> (String, String) {
    let (cert, key) = make_leaf(stack.dir(), days);
    let server = HttpServer::start_tls(stack.dir(), &cert, &key);
    let mut extra = format!(
        "checks = [\"http\"]\nhttp-url = {}",
        toml_str(&format!("https://127.0.0.1:{}/health", server.port))
    );
    if let Some(ca) = ca {
        extra.push_str(&format!("\nhttp-ca-file = {}", toml_path(ca)));
    }
    let daemon: Daemon = stack.daemon(&extra).name(&format!("d{days}")).spawn();
    let (_, checks) = health_now(&daemon);
    let http = &checks["http"];
    (
        http["status"].as_str().unwrap().to_owned(),
        http["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn certificate_expiry_warns_under_14_days_and_fails_under_3() {
    let stack = Stack::new();
    let ca = make_ca(stack.dir());
    let (status, message) = check_https(&stack, Some(&ca), 30);
    assert_eq!(status, "ok", "{message}");
    assert!(
        message.contains("body matches, certificate expires"),
        "{message}"
    );
    let (status, message) = check_https(&stack, Some(&ca), 10);
    assert_eq!(status, "warn", "{message}");
    let (status, message) = check_https(&stack, Some(&ca), 2);
    assert_eq!(status, "fail", "{message}");
    assert!(message.contains("certificate expires"), "{message}");
    // Without the CA the certificate is not trusted at all.
    let (status, message) = check_https(&stack, None, 30);
    assert_eq!(status, "fail", "{message}");
    assert!(message.contains("certificate"), "{message}");
}
