//! The NBD server end to end: the real server on 127.0.0.1 ephemeral ports, an in-memory
//! device behind it, driven by real clients (nbdinfo, qemu-io, nbdcopy, fio) and by a raw
//! socket that sends well-formed and malformed frames byte by byte.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nbd::proto::{self, cmd, cmd_flags, info, opt, rep, transmission_flags};
use nbd::{BlockDevice, Export, ExportCatalog, Extent, ServerConfig};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// An in-memory device and catalog

const TRACK: u64 = 4096;

struct MemState {
    data: Vec<u8>,
    /// Allocation per 4 KiB block, for `base:allocation`.
    allocated: Vec<bool>,
}

/// A `Vec<u8>` behind a mutex, with allocation tracking and an optional delay on reads.
struct MemDevice {
    state: Mutex<MemState>,
    /// Milliseconds each read sleeps first.
    read_delay: AtomicU64,
}

impl MemDevice {
    fn new(size: usize) -> Self {
        Self {
            state: Mutex::new(MemState {
                data: vec![0; size],
                allocated: vec![false; size.div_ceil(TRACK as usize)],
            }),
            read_delay: AtomicU64::new(0),
        }
    }

    fn filled(size: usize, byte: u8) -> Self {
        let d = Self::new(size);
        {
            let mut s = d.state.lock().unwrap();
            s.data.fill(byte);
            s.allocated.fill(true);
        }
        d
    }

    fn with_read_delay(self, delay: Duration) -> Self {
        self.set_read_delay(delay);
        self
    }

    fn set_read_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.read_delay.store(ms, Ordering::SeqCst);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.lock().unwrap().data.clone()
    }

    fn range(s: &MemState, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= s.data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(offset as usize..end as usize)
    }

    fn mark(s: &mut MemState, offset: u64, len: u64, allocated: bool) {
        // Allocation grows on any touch; holes only for whole blocks.
        let (first, last) = if allocated {
            (offset / TRACK, (offset + len).div_ceil(TRACK))
        } else {
            (offset.div_ceil(TRACK), (offset + len) / TRACK)
        };
        for b in first..last {
            if let Some(a) = s.allocated.get_mut(b as usize) {
                *a = allocated;
            }
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.state.lock().unwrap().data.len() as u64
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let delay = self.read_delay.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let s = self.state.lock().unwrap();
        let r = Self::range(&s, offset, buf.len() as u64)?;
        buf.copy_from_slice(&s.data[r]);
        Ok(())
    }

    fn write(&self, offset: u64, data: &mut [u8], _fua: bool) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let r = Self::range(&s, offset, data.len() as u64)?;
        s.data[r].copy_from_slice(data);
        Self::mark(&mut s, offset, data.len() as u64, true);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let r = Self::range(&s, offset, len)?;
        s.data[r].fill(0);
        Self::mark(&mut s, offset, len, false);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, no_hole: bool, _fua: bool) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let r = Self::range(&s, offset, len)?;
        s.data[r].fill(0);
        Self::mark(&mut s, offset, len, no_hole);
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let s = self.state.lock().unwrap();
        Self::range(&s, offset, len)?;
        let end = offset + len;
        let mut extents: Vec<Extent> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let stop = ((pos / TRACK + 1) * TRACK).min(end);
            let hole = !s.allocated[(pos / TRACK) as usize];
            match extents.last_mut() {
                Some(last) if last.hole == hole => last.len += stop - pos,
                _ => extents.push(Extent {
                    len: stop - pos,
                    hole,
                    zero: hole,
                }),
            }
            pos = stop;
        }
        Ok(extents)
    }

    fn can_multi_conn(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct Catalog {
    exports: Mutex<HashMap<String, Export>>,
}

impl Catalog {
    fn add(&self, name: &str, device: Arc<MemDevice>, read_only: bool) -> CancellationToken {
        let revoked = CancellationToken::new();
        self.exports.lock().unwrap().insert(
            name.to_owned(),
            Export {
                device,
                read_only,
                revoked: revoked.clone(),
            },
        );
        revoked
    }
}

impl ExportCatalog for Catalog {
    fn open(&self, name: &str) -> Option<Export> {
        self.exports.lock().unwrap().get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// Server and tools

struct TestServer {
    port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: ServerConfig, catalog: Arc<Catalog>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(nbd::serve(listener, config, catalog, shutdown.clone()));
    TestServer {
        port,
        shutdown,
        task,
    }
}

/// Accepts exactly one connection and serves it with `serve_connection`, returning its result.
async fn start_one(
    config: ServerConfig,
    catalog: Arc<Catalog>,
) -> (
    u16,
    tokio::task::JoinHandle<Result<(), nbd::ConnectionError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        nbd::serve_connection(stream, config, catalog, CancellationToken::new()).await
    });
    (port, task)
}

fn tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        println!("skipping: {name} is not installed");
    }
    found
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &str, args: &[&str]) -> Run {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run_ok(program: &str, args: &[&str]) -> String {
    let r = run(program, args).await;
    assert!(
        r.ok,
        "{program} {args:?} failed\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// Writes a CA (`ca-cert.pem`, the name qemu and libnbd look for) into `dir` and returns a
/// rustls configuration with a server certificate for `localhost` and `127.0.0.1` it signed.
fn tls_setup(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "sealdisk test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let chain = vec![
        CertificateDer::from(cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Deterministic non-trivial bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Real clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_shows_size_block_sizes_structured_replies_and_base_allocation() {
    if !tool("nbdinfo") {
        return;
    }
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::new(8 << 20));
    device.write(0, &mut [0x11; 65536], false).unwrap();
    catalog.add("disk-9f3a", Arc::clone(&device), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let uri = format!("nbd://127.0.0.1:{}/disk-9f3a", server.port);

    let out = run_ok("nbdinfo", &["--json", &uri]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["protocol"], "newstyle-fixed", "{out}");
    assert_eq!(v["TLS"], false);
    assert_eq!(v["structured"], true);
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 8 << 20);
    assert_eq!(e["block_size_minimum"], 512, "{out}");
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    assert_eq!(e["contexts"], serde_json::json!(["base:allocation"]));
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["can_df"], true);
    assert_eq!(e["can_flush"], true);
    assert_eq!(e["can_fua"], true);
    assert_eq!(e["can_trim"], true);
    assert_eq!(e["can_zero"], true);
    assert_eq!(e["can_multi_conn"], true);

    let map = run_ok("nbdinfo", &["--map", "--json", &uri]).await;
    let m: serde_json::Value = serde_json::from_str(&map).unwrap();
    assert_eq!(m[0]["offset"], 0, "{map}");
    assert_eq!(m[0]["length"], 65536, "{map}");
    assert_eq!(m[0]["type"], 0, "{map}");
    assert_eq!(m[1]["offset"], 65536, "{map}");
    assert_eq!(m[1]["type"], 3, "{map}");

    // Export names are capabilities: listing shows none.
    let list = run(
        "nbdinfo",
        &["--list", &format!("nbd://127.0.0.1:{}", server.port)],
    )
    .await;
    assert!(!list.stdout.contains("disk-9f3a"), "{}", list.stdout);

    // An unknown name is refused.
    let unknown = run(
        "nbdinfo",
        &[&format!("nbd://127.0.0.1:{}/disk-0000", server.port)],
    )
    .await;
    assert!(!unknown.ok);

    server.shutdown.cancel();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_writes_reads_zeroes_and_discards() {
    if !tool("qemu-io") {
        return;
    }
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::new(4 << 20));
    catalog.add("vol", Arc::clone(&device), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let uri = format!("nbd://127.0.0.1:{}/vol", server.port);
    let out = run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -P 0xcd 1M 1M",
            "-c",
            "write -z 1M 64k",
            "-c",
            "discard 1088k 64k",
            "-c",
            "flush",
            "-c",
            "read -P 0 1M 128k",
            "-c",
            "read -P 0xcd 1152k 896k",
            "-c",
            "write -f -P 0x5a 3M 512",
        ],
    )
    .await;
    assert!(!out.contains("fail"), "{out}");
    let data = device.snapshot();
    assert!(data[..65536].iter().all(|b| *b == 0xab));
    assert!(data[65536..1 << 20].iter().all(|b| *b == 0));
    assert!(data[(1 << 20)..(1 << 20) + 131072].iter().all(|b| *b == 0));
    assert!(data[(1 << 20) + 131072..2 << 20].iter().all(|b| *b == 0xcd));
    assert!(data[3 << 20..(3 << 20) + 512].iter().all(|b| *b == 0x5a));

    // A pattern check that must fail, to be sure failures are seen.
    let bad = run("qemu-io", &["-f", "raw", &uri, "-c", "read -P 0xee 0 4k"]).await;
    assert!(
        !bad.ok || bad.stdout.contains("Pattern verification failed"),
        "{}",
        bad.stdout
    );

    server.shutdown.cancel();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_work_and_plain_clients_are_refused() {
    if !tool("nbdinfo") || !tool("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_setup(dir.path());
    let certs = dir.path().to_str().unwrap();
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::new(2 << 20));
    catalog.add("secret-disk", Arc::clone(&device), false);
    let server = start(ServerConfig::tls(tls), Arc::clone(&catalog)).await;
    let port = server.port;

    let out = run_ok(
        "nbdinfo",
        &[
            "--json",
            &format!("nbds://localhost:{port}/secret-disk?tls-certificates={certs}"),
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["TLS"], true, "{out}");
    assert_eq!(v["exports"][0]["export-size"], 2 << 20);
    assert_eq!(v["exports"][0]["block_size_minimum"], 512);

    let image = format!("driver=nbd,host=localhost,port={port},export=secret-disk,tls-creds=tls0");
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={certs}");
    let out = run_ok(
        "qemu-io",
        &[
            "--object",
            &object,
            "--image-opts",
            &image,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -P 0x17 1M 256k",
            "-c",
            "read -P 0x17 1M 256k",
        ],
    )
    .await;
    assert!(!out.contains("fail"), "{out}");
    let data = device.snapshot();
    assert!(data[..65536].iter().all(|b| *b == 0xab));
    assert!(
        data[1 << 20..(1 << 20) + (256 << 10)]
            .iter()
            .all(|b| *b == 0x17)
    );

    // Without TLS nothing gets through: not the export, not its size.
    let plain = run("nbdinfo", &[&format!("nbd://127.0.0.1:{port}/secret-disk")]).await;
    assert!(!plain.ok, "{}", plain.stdout);
    assert!(!plain.stdout.contains("2097152"));
    let plain_qemu = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &format!("nbd://127.0.0.1:{port}/secret-disk"),
            "-c",
            "read 0 4k",
        ],
    )
    .await;
    assert!(!plain_qemu.ok, "{}", plain_qemu.stdout);

    // A client that does not trust the CA fails the handshake.
    let other = tempfile::tempdir().unwrap();
    tls_setup(other.path());
    let untrusted = run(
        "nbdinfo",
        &[&format!(
            "nbds://localhost:{port}/secret-disk?tls-certificates={}",
            other.path().to_str().unwrap()
        )],
    )
    .await;
    assert!(!untrusted.ok);

    server.shutdown.cancel();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_round_trips_an_image() {
    if !tool("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 6 << 20;
    let mut image = pattern(size, 7);
    // A zero stretch in the middle exercises zeroing and block status.
    image[2 << 20..3 << 20].fill(0);
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    std::fs::write(&src, &image).unwrap();

    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::filled(size, 0xee));
    catalog.add("copy", Arc::clone(&device), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let uri = format!("nbd://127.0.0.1:{}/copy", server.port);

    run_ok("nbdcopy", &[src.to_str().unwrap(), &uri]).await;
    assert!(device.snapshot() == image, "image differs after upload");
    run_ok("nbdcopy", &[&uri, dst.to_str().unwrap()]).await;
    assert!(
        std::fs::read(&dst).unwrap() == image,
        "image differs after download"
    );

    server.shutdown.cancel();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fio_verifies_random_writes_at_queue_depth_16() {
    if !tool("fio") {
        return;
    }
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::new(16 << 20));
    catalog.add("fio", Arc::clone(&device), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let uri = format!("nbd://127.0.0.1:{}/fio", server.port);
    let uri_arg = format!("--uri={uri}");
    let r = run(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &uri_arg,
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=16m",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_state_save=0",
            "--output-format=terse",
        ],
    )
    .await;
    if r.stderr.contains("engine nbd not loadable") || r.stderr.contains("failed to load engine") {
        println!("skipping: fio has no nbd engine");
        return;
    }
    assert!(r.ok, "fio failed\n{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("verify"), "{}", r.stderr);
    server.shutdown.cancel();
    server.task.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A raw client

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone)]
struct Reply {
    cookie: u64,
    error: u32,
    data: Vec<u8>,
    descriptors: Vec<(u32, u32)>,
    message: String,
    structured: bool,
}

struct Raw {
    s: TcpStream,
    structured: bool,
    /// Data length expected for each outstanding simple-reply read.
    reads: HashMap<u64, usize>,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut g = [0u8; 18];
        tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut g))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g, proto::greeting());
        Self {
            s,
            structured: false,
            reads: HashMap::new(),
        }
    }

    /// Connects and answers the greeting with fixed newstyle and no zeroes.
    async fn hello(port: u16) -> Self {
        let mut r = Self::connect(port).await;
        r.send(&3u32.to_be_bytes()).await;
        r
    }

    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        tokio::time::timeout(IO_TIMEOUT, self.s.read_exact(&mut b))
            .await
            .expect("timed out")
            .expect("read failed");
        b
    }

    async fn option(&mut self, code: u32, data: &[u8]) {
        let mut f = Vec::new();
        f.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
        f.extend_from_slice(&code.to_be_bytes());
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.send(&f).await;
    }

    async fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.read_exact(20).await;
        assert_eq!(h[0..8], proto::OPTION_REPLY_MAGIC.to_be_bytes());
        let o = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let t = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let l = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let d = self.read_exact(l).await;
        (o, t, d)
    }

    /// Reads option replies up to the final one; returns all their types and data.
    async fn option_replies(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        loop {
            let (_, t, d) = self.option_reply().await;
            let last = t == rep::ACK || t & 0x8000_0000 != 0;
            v.push((t, d));
            if last {
                return v;
            }
        }
    }

    async fn go_with(
        &mut self,
        name: &str,
        structured: bool,
        meta: bool,
    ) -> Result<(u64, u16), u32> {
        if structured {
            self.option(opt::STRUCTURED_REPLY, b"").await;
            assert_eq!(self.option_replies().await[0].0, rep::ACK);
            self.structured = true;
        }
        if meta {
            self.option(
                opt::SET_META_CONTEXT,
                &meta_data(name, &["base:allocation"]),
            )
            .await;
            let r = self.option_replies().await;
            assert_eq!(r.len(), 2, "{r:?}");
        }
        self.option(opt::GO, &info_data(name, &[info::BLOCK_SIZE]))
            .await;
        let replies = self.option_replies().await;
        let last = replies.last().unwrap();
        if last.0 != rep::ACK {
            return Err(last.0);
        }
        let export = replies
            .iter()
            .find(|(t, d)| *t == rep::INFO && d[0..2] == info::EXPORT.to_be_bytes())
            .unwrap();
        let size = u64::from_be_bytes(export.1[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(export.1[10..12].try_into().unwrap());
        Ok((size, flags))
    }

    /// Full negotiation: structured replies with `base:allocation`, then GO.
    async fn open(port: u16, name: &str) -> (Self, u64, u16) {
        let mut r = Self::hello(port).await;
        let (size, flags) = r.go_with(name, true, true).await.unwrap();
        (r, size, flags)
    }

    fn request_bytes(kind: u16, flags: u16, cookie: u64, offset: u64, length: u32) -> [u8; 28] {
        proto::RequestHeader {
            flags,
            kind,
            cookie: proto::Cookie(cookie),
            offset,
            length,
        }
        .encode()
    }

    async fn request(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, length: u32) {
        if kind == cmd::READ {
            self.reads.insert(cookie, length as usize);
        }
        let b = Self::request_bytes(kind, flags, cookie, offset, length);
        self.send(&b).await;
    }

    async fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        let mut b = Self::request_bytes(cmd::WRITE, 0, cookie, offset, data.len() as u32).to_vec();
        b.extend_from_slice(data);
        self.send(&b).await;
    }

    /// Reads one complete reply (all chunks of a structured reply).
    async fn reply(&mut self) -> Reply {
        let magic = u32::from_be_bytes(self.read_exact(4).await.try_into().unwrap());
        if magic == proto::SIMPLE_REPLY_MAGIC {
            let rest = self.read_exact(12).await;
            let error = u32::from_be_bytes(rest[0..4].try_into().unwrap());
            let cookie = u64::from_be_bytes(rest[4..12].try_into().unwrap());
            let len = self.reads.remove(&cookie).unwrap_or(0);
            assert!(
                !(self.structured && len > 0),
                "simple reply to a read with structured replies"
            );
            let data = if error == 0 && len > 0 {
                self.read_exact(len).await
            } else {
                Vec::new()
            };
            return Reply {
                cookie,
                error,
                data,
                ..Reply::default()
            };
        }
        let mut reply = Reply {
            structured: true,
            ..Reply::default()
        };
        let mut m = magic;
        loop {
            assert_eq!(m, proto::STRUCTURED_REPLY_MAGIC, "bad reply magic {m:#x}");
            let h = self.read_exact(16).await;
            let flags = u16::from_be_bytes(h[0..2].try_into().unwrap());
            let kind = u16::from_be_bytes(h[2..4].try_into().unwrap());
            reply.cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
            let len = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
            let p = self.read_exact(len).await;
            match kind {
                proto::reply_type::OFFSET_DATA => reply.data.extend_from_slice(&p[8..]),
                proto::reply_type::BLOCK_STATUS => {
                    reply.descriptors = p[4..]
                        .chunks_exact(8)
                        .map(|c| {
                            (
                                u32::from_be_bytes(c[0..4].try_into().unwrap()),
                                u32::from_be_bytes(c[4..8].try_into().unwrap()),
                            )
                        })
                        .collect();
                }
                proto::reply_type::ERROR | proto::reply_type::ERROR_OFFSET => {
                    reply.error = u32::from_be_bytes(p[0..4].try_into().unwrap());
                    let ml = u16::from_be_bytes(p[4..6].try_into().unwrap()) as usize;
                    reply.message = String::from_utf8(p[6..6 + ml].to_vec()).unwrap();
                }
                proto::reply_type::NONE => assert_eq!(len, 0),
                other => panic!("unexpected chunk type {other}"),
            }
            if flags & proto::reply_flags::DONE != 0 {
                self.reads.remove(&reply.cookie);
                return reply;
            }
            m = u32::from_be_bytes(self.read_exact(4).await.try_into().unwrap());
        }
    }

    async fn read_at(&mut self, cookie: u64, offset: u64, len: u32) -> Reply {
        self.request(cmd::READ, 0, cookie, offset, len).await;
        let r = self.reply().await;
        assert_eq!(r.cookie, cookie);
        r
    }

    /// Asserts the server closes the connection (EOF or reset) without sending anything more.
    async fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match tokio::time::timeout(IO_TIMEOUT, self.s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected a closed connection, got {:?}", &b[..n]),
            Err(_) => panic!("connection not closed"),
        }
    }
}

fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&(export.len() as u32).to_be_bytes());
    d.extend_from_slice(export.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

const EPERM: u32 = 1;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const ESHUTDOWN: u32 = 108;

async fn one_export(size: usize) -> (Arc<Catalog>, Arc<MemDevice>, TestServer) {
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::new(size));
    catalog.add("disk", Arc::clone(&device), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    (catalog, device, server)
}

// ---------------------------------------------------------------------------------------------
// Handshake: malformed and refused frames

#[tokio::test]
async fn clients_without_fixed_newstyle_or_with_unknown_flags_are_dropped() {
    let (catalog, _, _server) = one_export(1 << 20).await;
    for flags in [0u32, 2, 4, 0x8000_0001] {
        let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
        let mut c = Raw::connect(port).await;
        c.send(&flags.to_be_bytes()).await;
        c.expect_closed().await;
        assert!(matches!(
            task.await.unwrap(),
            Err(nbd::ConnectionError::Protocol(_))
        ));
    }
}

#[tokio::test]
async fn bad_option_magic_and_huge_option_lengths_close_the_connection() {
    let (catalog, _, _server) = one_export(1 << 20).await;

    let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let mut c = Raw::hello(port).await;
    let mut frame = Vec::new();
    frame.extend_from_slice(b"IHAVEOPX");
    frame.extend_from_slice(&opt::LIST.to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    c.send(&frame).await;
    c.expect_closed().await;
    assert!(matches!(
        task.await.unwrap(),
        Err(nbd::ConnectionError::Protocol(
            proto::ProtoError::BadOptionMagic(_)
        ))
    ));

    // The data is never sent: the server must not wait for it.
    let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let mut c = Raw::hello(port).await;
    let mut frame = Vec::new();
    frame.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    frame.extend_from_slice(&opt::GO.to_be_bytes());
    frame.extend_from_slice(&u32::MAX.to_be_bytes());
    c.send(&frame).await;
    c.expect_closed().await;
    assert!(matches!(
        task.await.unwrap(),
        Err(nbd::ConnectionError::Protocol(
            proto::ProtoError::OptionTooLong { .. }
        ))
    ));
}

#[tokio::test]
async fn truncated_frames_end_the_connection_without_harm() {
    let (catalog, _, _server) = one_export(1 << 20).await;
    // Half an option header.
    let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let mut c = Raw::hello(port).await;
    c.send(&proto::IHAVEOPT.to_be_bytes()).await;
    drop(c);
    assert!(matches!(
        task.await.unwrap(),
        Err(nbd::ConnectionError::Io(_))
    ));
    // Option data shorter than announced.
    let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let mut c = Raw::hello(port).await;
    let mut frame = Vec::new();
    frame.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    frame.extend_from_slice(&opt::GO.to_be_bytes());
    frame.extend_from_slice(&100u32.to_be_bytes());
    frame.extend_from_slice(b"short");
    c.send(&frame).await;
    drop(c);
    assert!(matches!(
        task.await.unwrap(),
        Err(nbd::ConnectionError::Io(_))
    ));
    // Half a request header, then half a write payload.
    for tail in [
        &[0x25, 0x60][..],
        &Raw::request_bytes(cmd::WRITE, 0, 1, 0, 4096)[..],
    ] {
        let (port, task) = start_one(ServerConfig::plain(), Arc::clone(&catalog)).await;
        let mut c = Raw::hello(port).await;
        c.go_with("disk", true, true).await.unwrap();
        c.send(tail).await;
        c.send(&[0u8; 100]).await;
        drop(c);
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn option_errors_leave_the_connection_usable() {
    let (_catalog, _, server) = one_export(1 << 20).await;
    let mut c = Raw::hello(server.port).await;

    c.option(opt::LIST, b"").await;
    assert_eq!(c.option_replies().await, [(rep::ACK, vec![])]);
    c.option(opt::LIST, b"junk").await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_INVALID);
    c.option(99, b"whatever").await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_UNSUP);
    c.option(opt::STARTTLS, b"").await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_POLICY);
    c.option(opt::GO, &info_data("no-such-disk", &[])).await;
    assert_eq!(
        c.option_replies().await,
        [(rep::ERR_UNKNOWN, b"unknown export".to_vec())]
    );
    c.option(opt::INFO, &[0, 0, 0, 9, b'd']).await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_INVALID);
    c.option(
        opt::SET_META_CONTEXT,
        &meta_data("disk", &["base:allocation"]),
    )
    .await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_INVALID);
    c.option(opt::LIST_META_CONTEXT, &meta_data("disk", &[]))
        .await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_INVALID);
    c.option(opt::STRUCTURED_REPLY, b"").await;
    assert_eq!(c.option_replies().await[0].0, rep::ACK);
    c.option(opt::LIST_META_CONTEXT, &meta_data("disk", &["base:"]))
        .await;
    let r = c.option_replies().await;
    assert_eq!(r[0].0, rep::META_CONTEXT);
    assert_eq!(&r[0].1[4..], b"base:allocation");
    c.option(opt::INFO, &info_data("disk", &[info::NAME])).await;
    let r = c.option_replies().await;
    assert_eq!(r.last().unwrap().0, rep::ACK);
    assert!(
        r.iter()
            .any(|(t, d)| *t == rep::INFO && d[..] == [&[0, 1][..], b"disk"].concat()[..])
    );
    c.structured = true;
    let (size, _) = c.go_with("disk", false, true).await.unwrap();
    assert_eq!(size, 1 << 20);
    let r = c.read_at(1, 0, 4096).await;
    assert_eq!(r.error, 0);
    assert_eq!(r.data, vec![0; 4096]);
}

#[tokio::test]
async fn abort_is_acknowledged_and_export_name_for_unknown_names_closes() {
    let (_catalog, _, server) = one_export(1 << 20).await;
    let mut c = Raw::hello(server.port).await;
    c.option(opt::ABORT, b"").await;
    assert_eq!(c.option_replies().await, [(rep::ACK, vec![])]);
    c.expect_closed().await;

    let mut c = Raw::hello(server.port).await;
    c.option(opt::EXPORT_NAME, b"guess").await;
    c.expect_closed().await;

    // The old-style path to a known export: size and flags, no zeroes.
    let mut c = Raw::hello(server.port).await;
    c.option(opt::EXPORT_NAME, b"disk").await;
    let b = c.read_exact(10).await;
    assert_eq!(u64::from_be_bytes(b[0..8].try_into().unwrap()), 1 << 20);
    let r = c.read_at(5, 0, 512).await;
    assert!(!r.structured);
    assert_eq!(r.data, vec![0; 512]);
}

#[tokio::test]
async fn forced_tls_refuses_options_before_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_setup(dir.path());
    let catalog = Arc::new(Catalog::default());
    catalog.add("disk", Arc::new(MemDevice::new(1 << 20)), false);
    let server = start(ServerConfig::tls(tls), Arc::clone(&catalog)).await;

    let mut c = Raw::hello(server.port).await;
    for code in [opt::GO, opt::INFO, opt::LIST, opt::STRUCTURED_REPLY, 42] {
        c.option(code, &info_data("disk", &[])).await;
        let r = c.option_replies().await;
        assert_eq!(r.len(), 1, "no information may leak before TLS");
        assert_eq!(r[0].0, rep::ERR_TLS_REQD);
    }
    c.option(opt::STARTTLS, b"junk").await;
    assert_eq!(c.option_replies().await[0].0, rep::ERR_INVALID);
    c.option(opt::ABORT, b"").await;
    assert_eq!(c.option_replies().await[0].0, rep::ACK);
    c.expect_closed().await;

    let mut c = Raw::hello(server.port).await;
    c.option(opt::EXPORT_NAME, b"disk").await;
    c.expect_closed().await;

    // STARTTLS is acknowledged; garbage instead of a TLS handshake ends the connection.
    let mut c = Raw::hello(server.port).await;
    c.option(opt::STARTTLS, b"").await;
    assert_eq!(c.option_replies().await[0].0, rep::ACK);
    c.send(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xff, 0xff]).await;
    // rustls answers with a TLS alert record (content type 21), then the connection closes.
    let alert = c.read_exact(7).await;
    assert_eq!(alert[0], 21, "{alert:?}");
    c.expect_closed().await;
}

// ---------------------------------------------------------------------------------------------
// Transmission: refused requests

#[tokio::test]
async fn refused_requests_get_the_documented_errors_and_the_connection_goes_on() {
    let (_catalog, device, server) = one_export(1 << 20).await;
    let (mut c, size, flags) = Raw::open(server.port, "disk").await;
    assert_eq!(size, 1 << 20);
    assert_ne!(flags & transmission_flags::SEND_DF, 0);

    // Past the end: EINVAL for reads, trims and block status, ENOSPC for writes.
    assert_eq!(c.read_at(1, size, 512).await.error, EINVAL);
    assert_eq!(c.read_at(2, size - 512, 1024).await.error, EINVAL);
    assert_eq!(c.read_at(3, u64::MAX - 100, 512).await.error, EINVAL);
    c.request(cmd::TRIM, 0, 4, size, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.request(cmd::BLOCK_STATUS, 0, 5, size - 512, 1024).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.write(6, size - 512, &[7; 1024]).await;
    let r = c.reply().await;
    assert_eq!((r.cookie, r.error), (6, ENOSPC));
    c.request(cmd::WRITE_ZEROES, 0, 7, size, 512).await;
    assert_eq!(c.reply().await.error, ENOSPC);
    // The refused write's payload was consumed: the stream is still in step.
    let r = c.read_at(8, size - 512, 512).await;
    assert_eq!(r.error, 0);
    assert_eq!(r.data, vec![0; 512]);

    // Unaligned, oversized, unknown commands and stray flags: EINVAL.
    assert_eq!(c.read_at(9, 100, 512).await.error, EINVAL);
    assert_eq!(c.read_at(10, 0, 100).await.error, EINVAL);
    assert_eq!(c.read_at(11, 0, (32 << 20) + 512).await.error, EINVAL);
    c.request(42, 0, 12, 0, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.request(cmd::READ, cmd_flags::REQ_ONE, 13, 0, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.request(cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 14, 0, 512)
        .await;
    assert_eq!(c.reply().await.error, EINVAL);
    let r = c.read_at(15, 0, 0).await;
    assert_eq!((r.error, r.data.len()), (0, 0));
    // Errors with structured replies carry a message.
    let r = c.read_at(16, size, 512).await;
    assert!(r.structured && !r.message.is_empty());

    // Nothing was written by any of it.
    assert!(device.snapshot().iter().all(|b| *b == 0));
}

#[tokio::test]
async fn simple_replies_refuse_reads_without_payload() {
    let (_catalog, _, server) = one_export(1 << 20).await;
    let mut c = Raw::hello(server.port).await;
    c.go_with("disk", false, false).await.unwrap();
    let r = c.read_at(1, 1 << 20, 4096).await;
    assert!(!r.structured);
    assert_eq!((r.error, r.data.len()), (EINVAL, 0));
    // DF and block status need structured replies.
    c.request(cmd::READ, cmd_flags::DF, 2, 0, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.request(cmd::BLOCK_STATUS, 0, 3, 0, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
    c.write(4, 0, &[9; 4096]).await;
    assert_eq!(c.reply().await.error, 0);
    let r = c.read_at(5, 0, 4096).await;
    assert_eq!(r.data, vec![9; 4096]);
}

#[tokio::test]
async fn read_only_exports_refuse_writes_with_eperm() {
    let catalog = Arc::new(Catalog::default());
    let device = Arc::new(MemDevice::filled(1 << 20, 0x42));
    catalog.add("ro", Arc::clone(&device), true);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let (mut c, _, flags) = Raw::open(server.port, "ro").await;
    assert_ne!(flags & transmission_flags::READ_ONLY, 0);
    c.write(1, 0, &[0; 4096]).await;
    assert_eq!(c.reply().await.error, EPERM);
    c.request(cmd::TRIM, 0, 2, 0, 4096).await;
    assert_eq!(c.reply().await.error, EPERM);
    c.request(cmd::WRITE_ZEROES, 0, 3, 0, 4096).await;
    assert_eq!(c.reply().await.error, EPERM);
    c.request(cmd::FLUSH, 0, 4, 0, 0).await;
    assert_eq!(c.reply().await.error, 0);
    let r = c.read_at(5, 0, 4096).await;
    assert_eq!(r.data, vec![0x42; 4096]);
    assert!(device.snapshot().iter().all(|b| *b == 0x42));
}

#[tokio::test]
async fn oversized_write_gets_an_error_then_the_connection_closes() {
    let (_catalog, _, server) = one_export(64 << 20).await;
    let (mut c, _, _) = Raw::open(server.port, "disk").await;
    c.request(cmd::WRITE, 0, 77, 0, 64 << 20).await;
    let r = c.reply().await;
    assert_eq!((r.cookie, r.error), (77, EINVAL));
    c.expect_closed().await;
}

#[tokio::test]
async fn bad_request_magic_closes_the_connection() {
    let (_catalog, _, server) = one_export(1 << 20).await;
    let (mut c, _, _) = Raw::open(server.port, "disk").await;
    let mut b = Raw::request_bytes(cmd::READ, 0, 1, 0, 512);
    b[0] = 0x12;
    c.send(&b).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn block_status_reports_allocation_and_honours_req_one() {
    let (_catalog, device, server) = one_export(1 << 20).await;
    device.write(8192, &mut [1; 8192], false).unwrap();
    let (mut c, _, _) = Raw::open(server.port, "disk").await;
    c.request(cmd::BLOCK_STATUS, 0, 1, 0, 65536).await;
    let r = c.reply().await;
    assert_eq!(r.error, 0);
    assert_eq!(r.descriptors, [(8192, 3), (8192, 0), (65536 - 16384, 3)]);
    c.request(cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 2, 0, 65536)
        .await;
    assert_eq!(c.reply().await.descriptors, [(8192, 3)]);
    c.request(cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 3, 0, 512)
        .await;
    assert_eq!(c.reply().await.descriptors, [(512, 3)]);
    c.request(cmd::BLOCK_STATUS, 0, 4, 4096, 8192).await;
    assert_eq!(c.reply().await.descriptors, [(4096, 3), (4096, 0)]);
    c.request(cmd::TRIM, 0, 5, 8192, 4096).await;
    assert_eq!(c.reply().await.error, 0);
    c.request(cmd::BLOCK_STATUS, 0, 6, 0, 65536).await;
    assert_eq!(
        c.reply().await.descriptors,
        [(12288, 3), (4096, 0), (65536 - 16384, 3)]
    );

    // Without SET_META_CONTEXT for this export, block status is refused.
    let mut c = Raw::hello(server.port).await;
    c.go_with("disk", true, false).await.unwrap();
    c.request(cmd::BLOCK_STATUS, 0, 1, 0, 512).await;
    assert_eq!(c.reply().await.error, EINVAL);
}

// ---------------------------------------------------------------------------------------------
// Transmission: pipelining, isolation, revocation, shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_by_cookie() {
    let (_catalog, device, server) = one_export(4 << 20).await;
    let (mut c, _, _) = Raw::open(server.port, "disk").await;
    // 300 requests in one burst: writes to distinct blocks, then reads of them.
    let mut burst = Vec::new();
    let n = 150u64;
    for i in 0..n {
        burst.extend_from_slice(&Raw::request_bytes(cmd::WRITE, 0, i, i * 8192, 8192));
        burst.extend_from_slice(&pattern(8192, i));
    }
    c.send(&burst).await;
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = c.reply().await;
        assert_eq!(r.error, 0);
        assert!(seen.insert(r.cookie), "duplicate cookie {}", r.cookie);
    }
    assert_eq!(seen, (0..n).collect());
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend_from_slice(&Raw::request_bytes(cmd::READ, 0, 1000 + i, i * 8192, 8192));
    }
    burst.extend_from_slice(&Raw::request_bytes(cmd::FLUSH, 0, 5000, 0, 0));
    c.send(&burst).await;
    let mut seen = HashSet::new();
    for _ in 0..=n {
        let r = c.reply().await;
        assert_eq!(r.error, 0);
        if r.cookie != 5000 {
            assert_eq!(
                r.data,
                pattern(8192, r.cookie - 1000),
                "cookie {}",
                r.cookie
            );
        }
        assert!(seen.insert(r.cookie));
    }
    assert_eq!(seen.len() as u64, n + 1);
    let data = device.snapshot();
    for i in 0..n as usize {
        assert_eq!(data[i * 8192..(i + 1) * 8192], pattern(8192, i as u64)[..]);
    }
    // A disconnect after the burst is honoured once everything is answered.
    c.request(cmd::DISC, 0, 0, 0, 0).await;
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_never_see_each_others_data() {
    let catalog = Arc::new(Catalog::default());
    let a = Arc::new(MemDevice::filled(1 << 20, 0xaa));
    let b = Arc::new(MemDevice::filled(2 << 20, 0xbb));
    catalog.add("export-a", Arc::clone(&a), false);
    catalog.add("export-b", Arc::clone(&b), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;

    let (mut ca, size_a, _) = Raw::open(server.port, "export-a").await;
    let (mut cb, size_b, _) = Raw::open(server.port, "export-b").await;
    assert_eq!((size_a, size_b), (1 << 20, 2 << 20));
    // Concurrent writes on both, interleaved.
    for i in 0..64u64 {
        ca.write(i, i * 4096, &[0xa1; 4096]).await;
        cb.write(i, i * 4096, &[0xb1; 4096]).await;
    }
    for _ in 0..64 {
        assert_eq!(ca.reply().await.error, 0);
        assert_eq!(cb.reply().await.error, 0);
    }
    // Reads at and beyond A's end never return B's bytes.
    let r = ca.read_at(100, size_a - 4096, 4096).await;
    assert_eq!(r.data, vec![0xaa; 4096]);
    for (cookie, offset) in [(101, size_a), (102, size_a + 4096), (103, size_b - 4096)] {
        let r = ca.read_at(cookie, offset, 4096).await;
        assert_eq!((r.error, r.data.len()), (EINVAL, 0));
    }
    let r = ca.read_at(104, 0, 1 << 20).await;
    assert!(r.data[..256 << 10].iter().all(|x| *x == 0xa1));
    assert!(r.data[256 << 10..].iter().all(|x| *x == 0xaa));
    let r = cb.read_at(105, 0, 2 << 20).await;
    assert!(r.data[..256 << 10].iter().all(|x| *x == 0xb1));
    assert!(r.data[256 << 10..].iter().all(|x| *x == 0xbb));
    assert!(a.snapshot().iter().all(|x| *x == 0xa1 || *x == 0xaa));
    assert!(b.snapshot().iter().all(|x| *x == 0xb1 || *x == 0xbb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_errors_in_flight_requests_and_closes_promptly() {
    let catalog = Arc::new(Catalog::default());
    let slow =
        Arc::new(MemDevice::filled(1 << 20, 0x33).with_read_delay(Duration::from_millis(100)));
    let revoked = catalog.add("slow", Arc::clone(&slow), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;

    let (mut c, _, _) = Raw::open(server.port, "slow").await;
    let r = c.read_at(1, 0, 4096).await;
    assert_eq!(r.data, vec![0x33; 4096]);
    c.request(cmd::READ, 0, 2, 0, 4096).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t0 = Instant::now();
    revoked.cancel();
    // The read in flight completes on the device after revocation: it is answered with
    // ESHUTDOWN and no data, then the connection closes.
    let r = c.reply().await;
    assert_eq!((r.cookie, r.error, r.data.len()), (2, ESHUTDOWN, 0));
    c.expect_closed().await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // The revoked export is unknown from now on.
    let mut c = Raw::hello(server.port).await;
    assert_eq!(c.go_with("slow", false, false).await, Err(rep::ERR_UNKNOWN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_does_not_wait_for_a_stuck_device() {
    let catalog = Arc::new(Catalog::default());
    let stuck = Arc::new(MemDevice::filled(1 << 20, 0x44).with_read_delay(Duration::from_secs(2)));
    let revoked = catalog.add("stuck", Arc::clone(&stuck), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let (mut c, _, _) = Raw::open(server.port, "stuck").await;
    c.request(cmd::READ, 0, 1, 0, 4096).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    revoked.cancel();
    c.expect_closed().await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // A request sent after revocation on a fresh connection cannot even open the export.
    let mut c = Raw::hello(server.port).await;
    assert_eq!(c.go_with("stuck", true, true).await, Err(rep::ERR_UNKNOWN));
}

/// A device that turns slow while a connection carries out requests itself (queue depth 1,
/// fast so far) holds up that connection only: others on the same server go on, even on a
/// single-threaded runtime, and the slow read is answered when it ends.
#[tokio::test]
async fn a_device_that_turns_slow_holds_up_only_its_own_connection() {
    let catalog = Arc::new(Catalog::default());
    let turning = Arc::new(MemDevice::filled(1 << 20, 0x55));
    catalog.add("turning", Arc::clone(&turning), false);
    catalog.add("other", Arc::new(MemDevice::filled(1 << 20, 0x66)), false);
    let server = start(ServerConfig::plain(), Arc::clone(&catalog)).await;
    let (mut slow, _, _) = Raw::open(server.port, "turning").await;
    let (mut other, _, _) = Raw::open(server.port, "other").await;
    // One request at a time, fast: the connection serves them itself.
    for i in 0..64 {
        assert_eq!(slow.read_at(i, 0, 4096).await.error, 0);
    }
    turning.set_read_delay(Duration::from_millis(1500));
    slow.request(cmd::READ, 0, 100, 0, 4096).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    for i in 0..20 {
        let reply = other.read_at(200 + i, 4096, 4096).await;
        assert_eq!(reply.error, 0);
        assert_eq!(reply.data, vec![0x66; 4096]);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    let reply = slow.reply().await;
    assert_eq!((reply.cookie, reply.error), (100, 0));
    assert_eq!(reply.data, vec![0x55; 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener_and_every_connection() {
    let (_catalog, _, server) = one_export(1 << 20).await;
    let (mut c1, _, _) = Raw::open(server.port, "disk").await;
    let mut c2 = Raw::hello(server.port).await; // still negotiating
    assert_eq!(c1.read_at(1, 0, 512).await.error, 0);
    let t0 = Instant::now();
    server.shutdown.cancel();
    c1.expect_closed().await;
    c2.expect_closed().await;
    tokio::time::timeout(Duration::from_secs(2), server.task)
        .await
        .expect("serve did not return")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: arbitrary client bytes never panic the parsers

fn option_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![0u32..12, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(code, data)| {
            let mut f = proto::IHAVEOPT.to_be_bytes().to_vec();
            f.extend_from_slice(&code.to_be_bytes());
            f.extend_from_slice(&(data.len() as u32).to_be_bytes());
            f.extend_from_slice(&data);
            f
        });
    (any::<[u8; 4]>(), proptest::collection::vec(frame, 0..8)).prop_map(|(flags, frames)| {
        let mut v = flags.to_vec();
        for f in frames {
            v.extend_from_slice(&f);
        }
        v
    })
}

fn request_frames() -> impl Strategy<Value = Vec<u8>> {
    let header = (
        any::<u16>(),
        prop_oneof![0u16..9, any::<u16>()],
        any::<u64>(),
        prop_oneof![(0u64..2 << 20).prop_map(|o| o & !511), any::<u64>()],
        prop_oneof![(0u32..(64 << 10)).prop_map(|l| l & !511), any::<u32>()],
    )
        .prop_map(|(flags, kind, cookie, offset, length)| {
            let mut f = Raw::request_bytes(kind, flags, cookie, offset, length).to_vec();
            if kind == cmd::WRITE {
                f.resize(f.len() + (length as usize).min(4096), 0);
            }
            f
        });
    proptest::collection::vec(header, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_option_parsers(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        nbd::fuzzing::parse_options(&data);
        if let Some(h) = data.first_chunk::<16>() {
            let _ = proto::parse_option_header(h);
        }
        for code in 0..12 {
            let _ = proto::parse_option(code, &data);
        }
    }

    #[test]
    fn framed_options_never_panic_the_negotiation(data in option_frames()) {
        nbd::fuzzing::parse_options(&data);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_request_parsers(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        nbd::fuzzing::parse_requests(&data);
        if let Some(h) = data.first_chunk::<28>() {
            let _ = proto::parse_request_header(h);
        }
    }

    #[test]
    fn framed_requests_keep_every_invariant(data in request_frames()) {
        nbd::fuzzing::parse_requests(&data);
    }

    #[test]
    fn block_status_descriptors_follow_the_spec(
        offset in (0u64..1 << 30).prop_map(|o| o & !511),
        len in 1u32..(1 << 24),
        extents in proptest::collection::vec((0u64..20_000, any::<bool>(), any::<bool>()), 0..64),
        req_one in any::<bool>(),
    ) {
        let extents: Vec<Extent> = extents
            .into_iter()
            .map(|(len, hole, zero)| Extent { len, hole, zero })
            .collect();
        let mut out = Vec::new();
        nbd::command::block_status_descriptors(offset, len, &extents, req_one, &mut out);
        prop_assert!(!out.is_empty());
        if req_one {
            prop_assert_eq!(out.len(), 1);
        }
        let end = offset + u64::from(len);
        let mut pos = offset;
        for d in &out {
            prop_assert!(d.len > 0);
            pos += u64::from(d.len);
            prop_assert!(pos <= end);
            prop_assert!(pos % 512 == 0 || pos == end);
        }
    }
}
