//! `threadline-gateway opcua-trust`: pin an OPC UA server's certificate. Asks the device's
//! server for its endpoints (GetEndpoints needs no trust), shows the certificate of the
//! endpoint the device uses, and on confirmation writes it to `data_dir/pki/trusted/` under the
//! name async-opcua looks for (`CertificateStore::cert_file_name`), removing the copy async-opcua
//! left in `pki/rejected/`. The running gateway sees it at its next connect attempt.

use std::path::PathBuf;

use opcua::crypto::CertificateStore;

use super::session::{build_client, library_security, server_certificate};
use crate::config::GatewayConfig;
use crate::drivers::config::Protocol;

/// The certificate shown before it is trusted.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub endpoint: String,
    pub subject: String,
    /// SHA-1 of the DER, hex: the thumbprint OPC UA tools show.
    pub thumbprint: String,
    pub not_before: String,
    pub not_after: String,
    /// Where it goes: `data_dir/pki/trusted/…der`.
    pub path: PathBuf,
    /// Already there (nothing to do).
    pub already_trusted: bool,
}

/// Fetches the server certificate of OPC UA device `device` of `cfg`, asks `confirm`, and pins
/// it when confirmed. Ok(cert, pinned?).
pub async fn pin(
    cfg: &GatewayConfig,
    device: &str,
    confirm: impl FnOnce(&ServerCert) -> bool,
) -> Result<(ServerCert, bool), String> {
    let opcua: Vec<&str> = cfg
        .device
        .iter()
        .filter(|d| d.protocol == Protocol::OpcUa)
        .map(|d| d.id.as_str())
        .collect();
    let dev = cfg
        .device
        .iter()
        .find(|d| d.id == device && d.protocol == Protocol::OpcUa)
        .ok_or_else(|| {
            format!(
                "no OPC UA device {device:?} in the config (OPC UA devices: {})",
                if opcua.is_empty() {
                    "none".to_owned()
                } else {
                    opcua.join(", ")
                }
            )
        })?;
    let endpoint = dev.endpoint.clone().unwrap_or_default();
    let (policy, mode) = dev.opcua_security().map(|(p, m)| library_security(p, m))?;
    let client = build_client(&cfg.gateway.data_dir, dev)
        .await
        .map_err(|e| e.to_string())?;
    let cert = server_certificate(&client, &endpoint, policy, mode).await?;
    let pki = cfg.gateway.data_dir.join("pki");
    let name = CertificateStore::cert_file_name(&cert);
    let path = pki.join("trusted").join(&name);
    let der = cert
        .to_der()
        .map_err(|e| format!("cannot encode the certificate: {e}"))?;
    let already_trusted = std::fs::read(&path).is_ok_and(|d| d == der);
    let shown = ServerCert {
        endpoint,
        subject: cert.subject_name(),
        thumbprint: cert.thumbprint().as_hex_string(),
        not_before: cert
            .not_before()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|e| format!("unreadable ({e})")),
        not_after: cert
            .not_after()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|e| format!("unreadable ({e})")),
        path: path.clone(),
        already_trusted,
    };
    if already_trusted || !confirm(&shown) {
        return Ok((shown, false));
    }
    std::fs::create_dir_all(pki.join("trusted"))
        .map_err(|e| format!("cannot create {}: {e}", pki.join("trusted").display()))?;
    std::fs::write(&path, &der).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let rejected = pki.join("rejected").join(&name);
    if rejected.exists() {
        std::fs::remove_file(&rejected)
            .map_err(|e| format!("cannot remove {}: {e}", rejected.display()))?;
    }
    Ok((shown, true))
}
