#!/usr/bin/env bash
# unwrapKey over HTTPS against the same operation in process, interleaved in one run.
#
#   bench/unwrap.sh [--seconds 5] [--rounds 3] [--clients 2] [--connections 1] [--bits 3072]
#                   [--client rust|python] [--server-bin PATH] [--no-build]
#
# Starts `sealdisk serve` on ephemeral ports with a fresh data dir, creates a vault and an
# RSA key, wraps one 32-byte value, then runs ROUNDS rounds of
#   inprocess:        crates/keyvault/examples/rsa_private_ops, 2 threads (the peer);
#   inprocess_reload: the same, parsing the key from PKCS#8 before every unwrap, as the
#                     server's request path does;
#   audit_probe:      crates/keyvault/examples/audit_append, 1 thread, 1 s, in the server's
#                     data dir: what one durable audit append costs on this disk right now;
#   https:            CLIENTS client processes, each with CONNECTIONS keep-alive HTTPS
#                     connections, calling unwrapkey in a loop: the Rust client
#                     (crates/sealdisk/examples/unwrap_load, one thread per process) or the
#                     Python one (bench/unwrap_client.py, one thread per connection);
# each for SECONDS. Prints every round as a JSON line, then the medians and each median over
# the in-process one. Both sides share this machine's cores: see BENCHMARKS.md.
set -euo pipefail

seconds=5 rounds=3 clients=2 connections=1 bits=3072 build=1 server_bin= client=rust
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --bits) bits=$2; shift 2 ;;
        --server-bin) server_bin=$2; shift 2 ;;
        --client) client=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=$repo/.venv/bin/python
[ -x "$python" ] || { echo "no $python: create the repo's .venv (scripts/test does)" >&2; exit 1; }
case "$client" in rust | python) ;; *) echo "--client rust or python" >&2; exit 2 ;; esac
if [ "$build" = 1 ]; then
    cargo build --release -p sealdisk -p keyvault --bins \
        --example rsa_private_ops --example audit_append --example unwrap_load >&2
fi
server_bin=${server_bin:-$repo/target/release/sealdisk}
examples=$repo/target/release/examples

work=$(mktemp -d)
data=$work/data
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$server_bin" serve --data-dir "$data" --listen localhost:0 --nbd-listen 127.0.0.1:0 \
    >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    if [ -s "$data/connection.json" ] && [ -s "$data/tls/ca-cert.pem" ]; then
        endpoint=$(jq -r .endpoint "$data/connection.json")
        if curl -sf --cacert "$data/tls/ca-cert.pem" "${endpoint%/}/healthz" >/dev/null; then
            break
        fi
    fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
"$python" bench/unwrap_client.py setup --connection "$data/connection.json" --bits "$bits" \
    >"$work/setup.json"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
results=$work/rounds.jsonl

for round in $(seq "$rounds"); do
    "$examples/rsa_private_ops" --threads 2 --seconds "$seconds" --bits "$bits" \
        | jq -c --argjson round "$round" '. + {label: "inprocess", round: $round}' \
        | tee -a "$results"
    "$examples/rsa_private_ops" --threads 2 --seconds "$seconds" --bits "$bits" --reload-key \
        | jq -c --argjson round "$round" '. + {label: "inprocess_reload", round: $round}' \
        | tee -a "$results"
    "$examples/audit_append" --threads 1 --seconds 1 --dir "$data" \
        | jq -c --argjson round "$round" \
            '. + {label: "audit_probe", round: $round, ops_per_sec: .appends_per_sec}' \
        | tee -a "$results"

    # B: over HTTPS. The clients open their connections first, then start together.
    start_at=$(date -d '+2 seconds' +%s.%N)
    before=$(cpu_ticks "$server_pid")
    pids=()
    for c in $(seq "$clients"); do
        if [ "$client" = rust ]; then
            "$examples/unwrap_load" --setup "$work/setup.json" --seconds "$seconds" \
                --start-at "$start_at" --connections "$connections" >"$work/client-$c.json" &
        else
            "$python" bench/unwrap_client.py run --setup "$work/setup.json" \
                --seconds "$seconds" --start-at "$start_at" --connections "$connections" \
                >"$work/client-$c.json" &
        fi
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    after=$(cpu_ticks "$server_pid")
    jq -s -c --argjson round "$round" --argjson seconds "$seconds" --arg client "$client" \
        --argjson server_ticks "$((after - before))" --argjson hz "$ticks_per_second" '{
            label: "https", round: $round, client: $client, clients: length,
            connections_per_client: .[0].connections,
            ops: (map(.ops) | add), errors: (map(.errors) | add),
            ops_per_sec: ((map(.ops) | add) / $seconds),
            client_cpu_cores: ((map(.client_cpu_seconds) | add) / $seconds),
            server_cpu_cores: ($server_ticks / $hz / $seconds)
        }' "$work"/client-*.json | tee -a "$results"
done

"$python" bench/unwrap_client.py summary "$results"
