//! HTTPS `unwrapKey` load for `bench/unwrap.sh`: a light client, so that on a small machine
//! the measurement is of the server rather than of the client (the Python client spends about
//! as much CPU per request as the server's RSA operation).
//!
//! Reads the JSON that `bench/unwrap_client.py setup` prints (`kid`, `token`, `ca`, `value`,
//! `expect`), opens `--connections` keep-alive HTTP/1.1 connections (one `reqwest::Client`
//! each, all on one thread), checks one answer per connection, waits for `--start-at` (Unix
//! seconds), then calls unwrapkey on every connection in a loop for `--seconds`. Prints one
//! JSON line.
//!
//! ```text
//! cargo run --release -p sealdisk --example unwrap_load -- \
//!     --setup setup.json [--seconds 5] [--connections 1] [--start-at UNIX_SECONDS]
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::json;

/// What `unwrap_client.py setup` printed.
#[derive(Debug, Deserialize)]
struct Setup {
    kid: String,
    token: String,
    ca: PathBuf,
    value: String,
    expect: String,
}

#[derive(Debug)]
struct Options {
    setup: PathBuf,
    seconds: f64,
    connections: usize,
    start_at: Option<f64>,
}

fn parse_options() -> Result<Options> {
    let mut setup = None;
    let mut options = Options {
        setup: PathBuf::new(),
        seconds: 5.0,
        connections: 1,
        start_at: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = || format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--setup" => setup = Some(PathBuf::from(&value)),
            "--seconds" => options.seconds = value.parse().with_context(number)?,
            "--connections" => options.connections = value.parse().with_context(number)?,
            "--start-at" => options.start_at = Some(value.parse().with_context(number)?),
            _ => bail!("unknown option {flag} (--setup, --seconds, --connections, --start-at)"),
        }
    }
    options.setup = setup.context("--setup FILE is required")?;
    ensure!(
        options.connections > 0 && options.seconds.is_finite() && options.seconds > 0.0,
        "--connections and --seconds must be positive"
    );
    Ok(options)
}

/// Resolves every name to 127.0.0.1: the vault's host name is `<vault>.vault.localhost`.
#[derive(Debug, Clone, Copy)]
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs =
            Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// User + system CPU time of this process, in seconds (from /proc, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    ticks(11)
        .zip(ticks(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

struct Connection {
    client: reqwest::Client,
    url: String,
    token: String,
    body: serde_json::Value,
}

impl Connection {
    async fn unwrap(&self) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(&self.url)
            .query(&[("api-version", "7.6")])
            .bearer_auth(&self.token)
            .json(&self.body)
            .send()
            .await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let options = parse_options()?;
    let setup: Setup = serde_json::from_slice(
        &std::fs::read(&options.setup).with_context(|| format!("{:?}", options.setup))?,
    )
    .context("reading the setup JSON")?;
    let ca = reqwest::Certificate::from_pem_bundle(&std::fs::read(&setup.ca)?)?;

    let mut connections = Vec::new();
    for _ in 0..options.connections {
        let client = reqwest::Client::builder()
            .dns_resolver(Loopback)
            .no_proxy()
            .http1_only()
            .pool_max_idle_per_host(1)
            .tls_certs_only(ca.clone())
            .timeout(Duration::from_secs(60))
            .build()?;
        connections.push(Connection {
            client,
            url: format!("{}/unwrapkey", setup.kid),
            token: setup.token.clone(),
            body: json!({"alg": "RSA-OAEP-256", "value": setup.value}),
        });
    }
    // Open every connection and check the answer before the clock starts.
    for connection in &connections {
        let resp = connection.unwrap().await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        ensure!(
            status.is_success() && body["value"] == setup.expect.as_str(),
            "unwrapKey: HTTP {status} {body}"
        );
    }
    if let Some(start_at) = options.start_at {
        tokio::time::sleep(Duration::from_secs_f64((start_at - now()).max(0.0))).await;
    }
    let cpu_before = cpu_seconds();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(options.seconds);
    // Tasks of a current-thread runtime: every connection is served by this one thread.
    let mut loops = tokio::task::JoinSet::new();
    for connection in connections {
        loops.spawn(async move {
            let (mut ops, mut errors) = (0u64, 0u64);
            while tokio::time::Instant::now() < deadline {
                match connection.unwrap().await {
                    Ok(resp) if resp.status().is_success() => {
                        // Read the body, as a real client would.
                        let _ = resp.bytes().await;
                        ops += 1;
                    }
                    _ => errors += 1,
                }
            }
            (ops, errors)
        });
    }
    let (mut ops, mut errors) = (0u64, 0u64);
    for (o, e) in loops.join_all().await {
        ops += o;
        errors += e;
    }
    let line = json!({
        "bench": "https_unwrap_client",
        "client": "rust",
        "connections": options.connections,
        "seconds": options.seconds,
        "ops": ops,
        "errors": errors,
        "client_cpu_seconds": cpu_seconds() - cpu_before,
    });
    println!("{line}");
    Ok(())
}
