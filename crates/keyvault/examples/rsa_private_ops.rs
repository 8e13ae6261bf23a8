//! In-process RSA private-key throughput: the peer that `bench/unwrap.sh` compares the HTTPS
//! `unwrapKey` endpoint against. Each thread unwraps the same RSA-OAEP-256 wrapped key in a
//! loop through `KeyMaterial::unwrap_key`, the call the server's handler makes, for a fixed
//! time. Prints one JSON line.
//!
//! ```text
//! cargo run --release -p keyvault --example rsa_private_ops -- \
//!     [--threads 2] [--seconds 5] [--bits 3072] [--reload-key]
//! ```
//!
//! `--reload-key` also parses the key from its PKCS#8 bytes before every unwrap
//! (`KeyMaterial::from_pkcs8`), as the server's request path does after unsealing it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyvault::material::{EncryptionAlgorithm, KeyMaterial};

#[derive(Debug)]
struct Options {
    threads: usize,
    seconds: f64,
    bits: usize,
    reload_key: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        threads: 2,
        seconds: 5.0,
        bits: 3072,
        reload_key: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--reload-key" {
            options.reload_key = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--threads" => options.threads = value.parse().map_err(|_| bad())?,
            "--seconds" => options.seconds = value.parse().map_err(|_| bad())?,
            "--bits" => options.bits = value.parse().map_err(|_| bad())?,
            _ => {
                return Err(format!(
                    "unknown option {flag} (--threads, --seconds, --bits, --reload-key)"
                ));
            }
        }
    }
    if options.threads == 0 || !options.seconds.is_finite() || options.seconds <= 0.0 {
        return Err("--threads and --seconds must be positive".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("rsa_private_ops: {message}");
            return ExitCode::from(2);
        }
    };
    let alg = EncryptionAlgorithm::RsaOaep256;
    let key = match KeyMaterial::generate_rsa(options.bits) {
        Ok(key) => Arc::new(key),
        Err(e) => {
            eprintln!("rsa_private_ops: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secret = [0x42u8; 32];
    let wrapped = Arc::new(
        key.wrap_key(alg, &secret)
            .expect("wrapping with a fresh key"),
    );
    // Warm up, and check the round trip once.
    assert_eq!(&key.unwrap_key(alg, &wrapped).expect("unwrap")[..], &secret);

    let stop = Arc::new(AtomicBool::new(false));
    let reload_key = options.reload_key;
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|_| {
            let (key, wrapped, stop) = (Arc::clone(&key), Arc::clone(&wrapped), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let plain = if reload_key {
                        let key = KeyMaterial::from_pkcs8(key.pkcs8()).expect("reload");
                        key.unwrap_key(alg, &wrapped).expect("unwrap")
                    } else {
                        key.unwrap_key(alg, &wrapped).expect("unwrap")
                    };
                    std::hint::black_box(&plain);
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "bench": "inprocess_unwrap",
        "alg": alg.as_str(),
        "bits": options.bits,
        "threads": options.threads,
        "reload_key": options.reload_key,
        "seconds": elapsed,
        "ops": ops,
        "ops_per_sec": ops as f64 / elapsed,
    });
    println!("{line}");
    ExitCode::SUCCESS
}
