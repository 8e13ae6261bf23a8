//! Listening sockets, TLS and the connection loop with graceful shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("'{0}' is not HOST:PORT")]
    BadAddress(String),
    #[error("cannot resolve '{host}': {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no port free on every address of '{0}' after several tries")]
    NoCommonPort(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Binds `spec` (`HOST:PORT`). `localhost` binds both `127.0.0.1` and `::1`; port 0 picks one
/// free port that every address shares. Returns the listeners and the port.
pub async fn bind(spec: &str) -> Result<(Vec<TcpListener>, u16), ListenError> {
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| ListenError::BadAddress(spec.into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ListenError::BadAddress(spec.into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    } else if let Ok(ip) = host.parse() {
        vec![ip]
    } else {
        let mut ips: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| ListenError::Resolve {
                host: host.into(),
                source,
            })?
            .map(|a| a.ip())
            .collect();
        ips.dedup();
        ips
    };
    for _ in 0..20 {
        match bind_all(&ips, port).await {
            Ok(bound) => return Ok(bound),
            Err(ListenError::Bind { source, .. })
                if port == 0 && source.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(ListenError::NoCommonPort(spec.into()))
}

async fn bind_all(ips: &[IpAddr], port: u16) -> Result<(Vec<TcpListener>, u16), ListenError> {
    let mut listeners = Vec::new();
    let mut port = port;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind { addr, source })?;
        port = listener
            .local_addr()
            .map_err(|source| ListenError::Bind { addr, source })?
            .port();
        listeners.push(listener);
    }
    Ok((listeners, port))
}

/// A rustls server configuration (AWS-LC provider, HTTP/2 and HTTP/1.1) for the PEM chain and key.
pub fn tls_config(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, ListenError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ListenError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listeners` until `shutdown` completes, then lets open
/// connections finish (bounded by a drain timeout).
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::net::TcpStream, SocketAddr)>(64);
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let tx = tx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok(conn) => {
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    drop(tx);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            conn = rx.recv() => match conn {
                Some(conn) => conn,
                None => break,
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    for task in accept_tasks {
        task.abort();
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}
