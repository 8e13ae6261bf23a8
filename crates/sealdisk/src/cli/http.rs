//! The HTTPS client: trusts only the deployment's CA, resolves `*.localhost` itself, and prints
//! each exchange to stderr under `--debug`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::Value;

use super::error::{CliError, CliResult};
use super::profile::Secret;

/// Resolves `localhost` and every `*.localhost` name (e.g. `myvault.vault.localhost`) to
/// 127.0.0.1 without asking the system (RFC 6761 reserves them for loopback, but not every
/// resolver knows); other names go to the system resolver.
#[derive(Debug, Clone, Copy)]
struct LocalhostResolver;

/// True for names that must resolve to loopback.
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

impl reqwest::dns::Resolve for LocalhostResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if is_localhost_name(&host) {
                let addrs: reqwest::dns::Addrs =
                    Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Value),
    /// `application/x-www-form-urlencoded` (may hold secrets).
    Form(Vec<(&'static str, Secret)>),
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Full URL including query.
    pub url: Url,
    /// Bearer token, if any.
    pub bearer: Option<Secret>,
    /// Body.
    pub body: Body,
}

impl Request {
    /// A request without token or body.
    pub fn new(method: Method, url: Url) -> Self {
        Request {
            method,
            url,
            bearer: None,
            body: Body::Empty,
        }
    }
}

/// One HTTP response, read whole.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase of the status.
    pub reason: &'static str,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; `None` when empty.
    pub fn json(&self, url: &Url) -> CliResult<Option<Value>> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| CliError::BadResponse {
                url: url.to_string(),
                detail: format!("body is not JSON: {e}"),
            })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The HTTP client of one CLI run.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    debug: bool,
}

impl Http {
    /// Builds a client. With `ca_file`, only the certificates in that PEM bundle are trusted;
    /// without it, the platform's roots.
    pub fn new(ca_file: Option<&Path>, debug: bool) -> CliResult<Self> {
        let mut builder = reqwest::Client::builder()
            .dns_resolver(LocalhostResolver)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("sealdisk-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| CliError::File {
                path: path.to_owned(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| CliError::CaBundle {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(CliError::CaBundle {
                    path: path.to_owned(),
                    detail: "no certificate found in the file".to_owned(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(CliError::HttpClient)?;
        Ok(Http { client, debug })
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, req: &Request) -> CliResult<Response> {
        let started = Instant::now();
        let mut builder = self.client.request(req.method.clone(), req.url.clone());
        if let Some(token) = &req.bearer {
            builder = builder.bearer_auth(token.expose());
        }
        builder = match &req.body {
            Body::Empty => builder,
            Body::Json(v) => builder.json(v),
            Body::Form(fields) => {
                let plain: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.expose())).collect();
                builder.form(&plain)
            }
        };
        let transport = |source| CliError::Transport {
            method: req.method.to_string(),
            url: req.url.to_string(),
            source,
        };
        let result = async {
            let resp = builder.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Response {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or(""),
                headers,
                body,
            })
        }
        .await;
        if self.debug {
            let elapsed = started.elapsed().as_millis();
            match &result {
                Ok(r) => eprintln!(
                    "DEBUG: {} {} -> {} {} ({elapsed} ms)",
                    req.method, req.url, r.status, r.reason
                ),
                Err(e) => eprintln!(
                    "DEBUG: {} {} -> error: {e} ({elapsed} ms)",
                    req.method, req.url
                ),
            }
        }
        result.map_err(transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[test]
    fn localhost_names() {
        assert!(is_localhost_name("localhost"));
        assert!(is_localhost_name("LOCALHOST."));
        assert!(is_localhost_name("myvault.vault.localhost"));
        assert!(!is_localhost_name("localhost.example.com"));
        assert!(!is_localhost_name("notlocalhost"));
    }

    #[tokio::test]
    async fn vault_names_resolve_to_loopback() {
        let name: reqwest::dns::Name = "kv1.vault.localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = LocalhostResolver.resolve(name).await.unwrap().collect();
        assert_eq!(addrs, vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))]);
    }

    #[test]
    fn missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            Http::new(Some(&missing), false),
            Err(CliError::File { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            Http::new(Some(&empty), false),
            Err(CliError::CaBundle { .. })
        ));
    }
}
