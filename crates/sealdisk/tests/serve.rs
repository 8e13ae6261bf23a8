//! `sealdisk serve` as a process: start-up files, both loopback listeners, tokens, restart after
//! `kill -9`, clean shutdown on SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    dir: PathBuf,
    conn: Value,
}

impl Server {
    fn start(dir: &Path) -> Self {
        // The server rewrites connection.json atomically (a new inode) once it listens.
        let inode = |dir: &Path| {
            std::fs::metadata(dir.join("connection.json"))
                .ok()
                .map(|m| m.ino())
        };
        let before = inode(dir);
        let child = Command::new(env!("CARGO_BIN_EXE_sealdisk"))
            .args([
                "serve",
                "--listen",
                "localhost:0",
                "--nbd-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sealdisk serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let conn = loop {
            if inode(dir) != before
                && let Ok(bytes) = std::fs::read(dir.join("connection.json"))
                && let Ok(conn) = serde_json::from_slice::<Value>(&bytes)
            {
                break conn;
            }
            assert!(
                Instant::now() < deadline,
                "server did not write connection.json"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            dir: dir.to_path_buf(),
            conn,
        }
    }

    fn field(&self, name: &str) -> String {
        self.conn[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in connection.json"))
            .to_string()
    }

    fn port(&self) -> u16 {
        let endpoint = self.field("endpoint");
        endpoint
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A client that trusts only the deployment CA and sends `localhost` to `ip`.
    fn client(&self, ip: &str) -> reqwest::Client {
        let pem = std::fs::read(self.dir.join("tls/ca-cert.pem")).unwrap();
        let ca = reqwest::Certificate::from_pem(&pem).unwrap();
        let addr: SocketAddr = format!("{ip}:{}", self.port()).parse().unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("localhost", addr)
            .build()
            .unwrap()
    }

    async fn token(&self, client: &reqwest::Client) -> reqwest::Response {
        let url = format!(
            "{}{}/oauth2/v2.0/token",
            self.field("endpoint"),
            self.field("tenantId")
        );
        let scope = format!("{}/.default", self.field("endpoint"));
        client
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.field("clientId")),
                ("client_secret", &self.field("clientSecret")),
                ("scope", &scope),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn bearer(&self, client: &reqwest::Client) -> String {
        let response = self.token(client).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn wait_healthy(&self, client: &reqwest::Client) {
        let url = format!("{}healthz", self.field("endpoint"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "healthz never answered 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_creates_private_state_and_serves_both_loopbacks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for private in [
        "connection.json",
        "keys/platform-root.key",
        "keys/token-signing.pk8",
        "tls/ca-key.pem",
        "tls/server-key.pem",
    ] {
        assert_eq!(mode(&dir.path().join(private)), 0o600, "{private}");
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("keys/platform-root.key"))
            .unwrap()
            .len(),
        32
    );
    assert!(
        server
            .field("keyVaultDnsSuffix")
            .starts_with("vault.localhost:")
    );
    for ip in ["127.0.0.1", "[::1]"] {
        let client = server.client(ip);
        server.wait_healthy(&client).await;
        let token = server.bearer(&client).await;
        let subs: Value = client
            .get(format!(
                "{}subscriptions?api-version=2022-12-01",
                server.field("endpoint")
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            subs["value"][0]["subscriptionId"],
            server.field("subscriptionId")
        );
    }
}

#[tokio::test]
async fn state_survives_kill_9_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = server.client("127.0.0.1");
    server.wait_healthy(&client).await;
    let token = server.bearer(&client).await;
    let sub = server.field("subscriptionId");
    let rg = format!(
        "{}subscriptions/{sub}/resourcegroups/durable?api-version=2024-11-01",
        server.field("endpoint")
    );
    let created = client
        .put(&rg)
        .bearer_auth(&token)
        .json(&json!({"location": "westus2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let assignment_path = format!(
        "subscriptions/{sub}/resourceGroups/durable/providers/Microsoft.Authorization/roleAssignments/6b0f1d4e-2f43-4c59-8a43-5f1bd1b8c0aa?api-version=2022-04-01"
    );
    let assignment = format!("{}{assignment_path}", server.field("endpoint"));
    let principal = {
        let claims = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["oid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let put = client
        .put(&assignment)
        .bearer_auth(&token)
        .json(&json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
            "principalId": principal,
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let secret = server.field("clientSecret");

    server.child.kill().unwrap(); // SIGKILL: no chance to flush anything
    server.child.wait().unwrap();
    let mut server = Server::start(dir.path());
    assert_eq!(
        server.field("clientSecret"),
        secret,
        "the bootstrap secret is kept across restarts"
    );
    assert_eq!(server.field("subscriptionId"), sub);
    let client = server.client("127.0.0.1");
    server.wait_healthy(&client).await;
    let token = server.bearer(&client).await;
    let endpoint = server.field("endpoint");
    let rg = format!("{endpoint}subscriptions/{sub}/resourcegroups/durable?api-version=2024-11-01");
    let got: Value = client
        .get(&rg)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["location"], "westus2");
    let got = client
        .get(format!("{endpoint}{assignment_path}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    // SIGTERM: a clean exit.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean shutdown exits 0, got {status}");
}

#[tokio::test]
async fn wrong_secret_is_invalid_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.conn["clientSecret"] = json!("not-the-secret");
    let client = server.client("127.0.0.1");
    server.wait_healthy(&client).await;
    let response = server.token(&client).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);
}
