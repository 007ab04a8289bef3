//! TLS for the `net` import: one rustls client config per transport (so sessions
//! resume across its connections), client certificates, `--insecure`, and handshake
//! failures named for a user.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::bindings::roundtrip::transport::types::ErrorCode;
use crate::error::{Error, ErrorKind};

/// What the TLS client configuration is made from (`Config`'s TLS fields).
pub struct Settings<'a> {
    pub extra_ca_files: &'a [PathBuf],
    pub extra_ca_certs: &'a [CertificateDer<'static>],
    pub client_cert: Option<&'a ClientCert>,
    pub insecure: bool,
}

/// A client certificate chain and its private key, as PEM files (`--cert`, `--key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Builds the client config, shared by every connection of a transport: the system's
/// roots (the webpki set when the system has none), plus `extra_ca_files` (PEM) and
/// `extra_ca_certs` (DER); a client certificate when given; ALPN `h2, http/1.1` (what
/// the component offers by default; `--http1.1` offers `http/1.1` on a copy).
pub fn client_config(settings: &Settings<'_>) -> Result<Arc<ClientConfig>, Error> {
    // The files are read now, so a bad one is a configuration error at once; the
    // system's roots join them at the first handshake (`Verifier`).
    let mut extra = RootCertStore::empty();
    for file in settings.extra_ca_files {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!("cannot use CA file {}: {why}", file.display()),
            )
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            extra.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificates in it".to_owned()));
        }
    }
    for cert in settings.extra_ca_certs {
        extra.add(cert.clone()).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot trust a CA certificate: {e}"),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        roots: (!settings.insecure).then(|| Roots {
            extra,
            verifier: OnceLock::new(),
        }),
        provider: Arc::clone(&provider),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match settings.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let (chain, key) = read_client_cert(client)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "cannot use client certificate {} with key {}: {e}",
                        client.cert.display(),
                        client.key.display()
                    ),
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS client configs of one transport: for origins, and for `https://` proxies
/// (their own roots: the system's plus `--proxy-cacert`, as curl's; no client
/// certificate), each made once so sessions resume across connections.
#[derive(Clone)]
pub struct ClientTls {
    pub origin: Arc<ClientConfig>,
    pub proxy: Arc<ClientConfig>,
    /// Origin certificates are not checked (`--insecure`): warn at each handshake.
    pub insecure: bool,
    /// Proxy certificates are not checked (`--proxy-insecure`).
    pub proxy_insecure: bool,
}

impl ClientTls {
    pub fn new(config: &crate::Config) -> Result<Self, Error> {
        let origin = client_config(&Settings {
            extra_ca_files: &config.extra_ca_files,
            extra_ca_certs: &config.extra_ca_certs,
            client_cert: config.client_cert.as_ref(),
            insecure: config.insecure_skip_verify,
        })?;
        let mut proxy = client_config(&Settings {
            extra_ca_files: &config.proxy.ca_files,
            extra_ca_certs: &[],
            client_cert: None,
            insecure: config.proxy.insecure,
        })?;
        // What the component offers a proxy, so no handshake needs a copy.
        Arc::make_mut(&mut proxy).alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            origin,
            proxy,
            insecure: config.insecure_skip_verify,
            proxy_insecure: config.proxy.insecure,
        })
    }
}

/// The operating system's trusted roots; the webpki (Mozilla) set if it has none.
/// Read from disk once per process: every transport (a demo makes several) shares it.
fn system_roots() -> RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A certificate rustls cannot use is skipped, as curl and Go skip it.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec();
            }
            roots
        })
        .clone()
}

fn read_client_cert(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let bad = |file: &PathBuf, why: String| {
        Error::new(
            ErrorKind::Config,
            format!(
                "cannot use client certificate file {}: {why}",
                file.display()
            ),
        )
    };
    let chain = CertificateDer::pem_file_iter(&client.cert)
        .map_err(|e| bad(&client.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&client.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&client.cert, "no PEM certificates in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot use key file {}: {e}", client.key.display()),
        )
    })?;
    Ok((chain, key))
}

/// Checks server certificates against the system's roots (read on the first handshake,
/// once per process: a program that never speaks https does not pay the milliseconds it
/// takes) and the extra CAs; with `--insecure` (`roots: None`) accepts any certificate.
/// Either way the handshake's signatures are checked, so the session keys belong to
/// whoever sent the certificate.
#[derive(Debug)]
struct Verifier {
    roots: Option<Roots>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
struct Roots {
    extra: RootCertStore,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl Roots {
    fn verifier(
        &self,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let mut roots = system_roots();
                roots.roots.extend(self.extra.roots.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(format!("no usable root certificates: {e}")))
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.roots {
            None => Ok(ServerCertVerified::assertion()),
            Some(roots) => roots.verifier(&self.provider)?.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Names a failed handshake with `server_name` the way Go and curl users know it.
pub fn classify(error: &io::Error, server_name: &str) -> ErrorCode {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ErrorCode::TlsProtocolError(format!(
            "TLS handshake with {server_name} failed: {error} (is the server speaking TLS on this port?)"
        ));
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => ErrorCode::TlsCertificateUnknownIssuer(format!(
                "tls: failed to verify certificate for {server_name}: certificate signed by unknown authority"
            )),
            CertificateError::NotValidForName => ErrorCode::TlsCertificateNameMismatch(format!(
                "tls: failed to verify certificate: certificate is not valid for {server_name}"
            )),
            CertificateError::NotValidForNameContext { presented, .. } => {
                ErrorCode::TlsCertificateNameMismatch(format!(
                    "tls: failed to verify certificate: certificate is valid for {}, not {server_name}",
                    presented.join(", ")
                ))
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ErrorCode::TlsCertificateExpired(format!(
                    "tls: failed to verify certificate for {server_name}: certificate has expired"
                ))
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ErrorCode::TlsCertificateExpired(format!(
                    "tls: failed to verify certificate for {server_name}: certificate is not yet valid"
                ))
            }
            other => ErrorCode::TlsCertificateError(format!(
                "tls: failed to verify certificate for {server_name}: {other:?}"
            )),
        },
        rustls::Error::AlertReceived(alert) => alert_code(*alert, &format!("from {server_name}")),
        other => ErrorCode::TlsProtocolError(format!("TLS handshake with {server_name}: {other}")),
    }
}

/// A TLS alert the peer sent after the handshake (TLS 1.3 servers judge a client
/// certificate then, so their verdict arrives on the first read), named like one sent
/// during it; `None` for any other I/O error.
pub fn alert_after_handshake(error: &io::Error, doing: &str) -> Option<ErrorCode> {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => {
            Some(alert_code(*alert, &format!("while {doing}")))
        }
        _ => None,
    }
}

/// `TlsAlertReceived`, with a hint for the alerts about client certificates.
fn alert_code(alert: rustls::AlertDescription, context: &str) -> ErrorCode {
    use rustls::AlertDescription as A;
    let hint = match alert {
        A::CertificateRequired => ": the server wants a client certificate (--cert and --key)",
        A::BadCertificate | A::UnknownCA | A::CertificateUnknown => {
            ": the server did not accept the certificate offered"
        }
        _ => "",
    };
    ErrorCode::TlsAlertReceived(format!("remote error: tls: {alert:?} ({context}){hint}"))
}
