//! Certificates for TLS tests, made with the `openssl` CLI.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cmd args…` in `dir`, quietly; true when it exits 0.
pub fn run_quiet(dir: &Path, cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes a private CA (`ca.pem`, `ca.key`) and a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`), EC P-256, valid two days, in `dir` — with the `openssl` CLI.
/// False when openssl is missing or fails (the caller skips, loudly).
pub fn make_tls_certs(dir: &Path) -> bool {
    if std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .is_err()
    {
        return false;
    }
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=threadline test CA",
    ]);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let sign = [
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ];
    run_quiet(dir, "openssl", &ca)
        && run_quiet(dir, "openssl", &csr)
        && run_quiet(dir, "openssl", &sign)
}
