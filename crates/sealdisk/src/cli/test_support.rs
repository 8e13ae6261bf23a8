//! A scripted plain-HTTP server for testing the session layer: answers requests in the order
//! given and records what it was sent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::http::Http;
use super::profile::{CachedToken, CloudEndpoints, PROFILE_VERSION, Profile, Secret};
use super::session::{Session, scope_for_resource};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Expected method.
    pub method: &'static str,
    /// Expected path (query ignored).
    pub path: String,
    /// Status to answer.
    pub status: u16,
    /// Extra headers; `{base}` is replaced by the server's base URL (in the body too).
    pub headers: Vec<(&'static str, String)>,
    /// Body to answer.
    pub body: String,
}

impl Reply {
    /// An answer with a JSON body.
    pub fn json(method: &'static str, path: &str, status: u16, body: serde_json::Value) -> Self {
        Reply {
            method,
            path: path.to_owned(),
            status,
            headers: Vec::new(),
            body: if body.is_null() {
                String::new()
            } else {
                body.to_string()
            },
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A request the server received: method, path with query, bearer token.
pub type Seen = (String, String, Option<String>);

/// Starts the server; returns its base URL (with trailing slash) and the request log.
pub async fn serve(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base2 = base.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mut reader = BufReader::new(stream);
            // One request per connection (we answer with `Connection: close`).
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).await.unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await.unwrap();
            let bearer = headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_owned);
            log.lock()
                .unwrap()
                .push((method.clone(), target.clone(), bearer));
            let reply = script.next().unwrap_or_else(|| {
                Reply::json(
                    "?",
                    "?",
                    500,
                    serde_json::json!({"error":{"code":"NoScript"}}),
                )
            });
            let path = target.split('?').next().unwrap_or_default();
            let (status, body) = if reply.method == method && reply.path == path {
                (reply.status, reply.body.replace("{base}", &base2))
            } else {
                let msg = format!(
                    "expected {} {}, got {method} {path}",
                    reply.method, reply.path
                );
                (
                    500,
                    serde_json::json!({"error":{"code":"Unexpected","message":msg}}).to_string(),
                )
            };
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in &reply.headers {
                head.push_str(&format!("{k}: {}\r\n", v.replace("{base}", &base2)));
            }
            head.push_str("\r\n");
            let mut stream = reader.into_inner();
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (base, seen)
}

/// A session against `base` with a cached ARM token `"cached"`, profile under `dir`.
pub fn session(base: &str, dir: &Path) -> Session {
    let cloud = CloudEndpoints::derived(base);
    let mut tokens = BTreeMap::new();
    tokens.insert(
        scope_for_resource(&cloud.arm_resource),
        CachedToken {
            access_token: Secret::new("cached".into()),
            expires_on: i64::MAX / 2,
        },
    );
    let profile = Profile {
        version: PROFILE_VERSION,
        endpoint: base.to_owned(),
        tenant_id: "t1".into(),
        client_id: "c1".into(),
        client_secret: Secret::new("s".into()),
        ca_cert_file: None,
        cloud,
        nbd_endpoint: None,
        subscriptions: Vec::new(),
        tokens,
    };
    let http = Http::new(None, false).unwrap();
    Session::new(http, profile, &dir.join("profile.json"))
}
