//! Audit log append throughput and group commit, on the disk that holds `--dir` (default: a
//! temporary directory under `$TMPDIR`). Each of `--threads` threads appends one entry at a
//! time, as a request handler does, for a fixed time. Prints one JSON line: appends/s,
//! batches/s (one `sync_data` of the log, one of the head's temp file and one of the
//! directory each) and the mean batch size.
//!
//! ```text
//! cargo run --release -p keyvault --example audit_append -- [--threads 8] [--seconds 5] [--dir D]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crypto::RootKey;
use keyvault::audit::{AuditLog, AuditRecord};

#[derive(Debug)]
struct Options {
    threads: usize,
    seconds: f64,
    dir: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        threads: 8,
        seconds: 5.0,
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--threads" => options.threads = value.parse().map_err(|_| bad())?,
            "--seconds" => options.seconds = value.parse().map_err(|_| bad())?,
            "--dir" => options.dir = Some(PathBuf::from(value)),
            _ => {
                return Err(format!(
                    "unknown option {flag} (--threads, --seconds, --dir)"
                ));
            }
        }
    }
    if options.threads == 0 || !options.seconds.is_finite() || options.seconds <= 0.0 {
        return Err("--threads and --seconds must be positive".into());
    }
    Ok(options)
}

fn record() -> AuditRecord {
    AuditRecord {
        caller_object_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
        vault: "bench-vault".into(),
        key: Some("disk-key".into()),
        version: Some("0123456789abcdef0123456789abcdef".into()),
        operation: "KeyUnwrap".into(),
        result: "Success".into(),
        detail: None,
    }
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("audit_append: {message}");
            return ExitCode::from(2);
        }
    };
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("a scratch directory");
    let root = RootKey::load_or_create(&scratch.path().join("root.key")).expect("root key");
    let path = scratch.path().join("audit").join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path, &root).expect("open the audit log"));

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|_| {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut latency = Duration::ZERO;
                let mut appends = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let one = Instant::now();
                    log.append(record()).expect("append");
                    latency += one.elapsed();
                    appends += 1;
                }
                (appends, latency)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let (appends, latency) = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .fold((0, Duration::ZERO), |(n, t), (a, l)| (n + a, t + l));
    let elapsed = started.elapsed().as_secs_f64();
    let stats = log.commit_stats();
    let line = serde_json::json!({
        "bench": "audit_append",
        "threads": options.threads,
        "seconds": elapsed,
        "appends": appends,
        "appends_per_sec": appends as f64 / elapsed,
        "batches_per_sec": stats.batches as f64 / elapsed,
        "mean_batch": stats.entries as f64 / stats.batches.max(1) as f64,
        "mean_latency_ms": latency.as_secs_f64() * 1e3 / appends.max(1) as f64,
    });
    println!("{line}");
    ExitCode::SUCCESS
}
