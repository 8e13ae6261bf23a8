#!/usr/bin/env bash
# unwrapKey over HTTPS against the same operation in process, interleaved in one run.
#
#   bench/unwrap.sh [--seconds 5] [--rounds 3] [--clients 2] [--connections 1] [--bits 3072]
#                   [--client rust|python] [--server-bin PATH] [--no-build]
#                   [--profile DIR]
#
# Starts `sealdisk serve` on ephemeral ports with a fresh data dir, creates a vault and an
# RSA key, wraps one 32-byte value, then runs ROUNDS rounds of
#   inprocess:        crates/keyvault/examples/rsa_private_ops, 2 threads (the peer), with
#                     the CPU it got (`cpu_cores`: below 2, something else took the rest);
#   inprocess_reload: the same, parsing the key from PKCS#8 before every unwrap, as the
#                     server did before it kept loaded keys;
#   audit_probe:      crates/keyvault/examples/audit_append, 1 thread, 1 s, in the server's
#                     data dir: what one durable audit append costs on this disk right now;
#   https:            CLIENTS client processes, each with CONNECTIONS keep-alive HTTPS
#                     connections, calling unwrapkey in a loop: the Rust client
#                     (crates/sealdisk/examples/unwrap_load, one thread per process) or the
#                     Python one (bench/unwrap_client.py, one thread per connection);
# each for SECONDS. The HTTPS rounds report the CPU of the server, of the clients and of the
# whole machine (`machine_busy_cores`: what is above server + clients is someone else's).
# Prints every round as a JSON line, then the medians, each median over the in-process one,
# and each HTTPS round over the in-process round before it (`round_ratios`). Both sides share
# this machine's cores: see BENCHMARKS.md.
# With --profile DIR, `perf record --call-graph dwarf` samples the server during every HTTPS
# round into DIR/https-ROUND.perf (read them with `perf report -i FILE`).
set -euo pipefail

seconds=5 rounds=3 clients=2 connections=1 bits=3072 build=1 server_bin= client=rust profile=
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
        --profile) profile=$2; shift 2 ;;
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
# Ticks every CPU of the machine spent busy (user, nice, system, irq, softirq, steal).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
ticks_per_second=$(getconf CLK_TCK)
TIMEFORMAT='%U %S'
results=$work/rounds.jsonl

for round in $(seq "$rounds"); do
    # The peer's own CPU: below 2 cores, something else on the machine took the rest.
    peer_cpu=$( { time "$examples/rsa_private_ops" --threads 2 --seconds "$seconds" \
        --bits "$bits" >"$work/peer.json"; } 2>&1 )
    jq -c --argjson round "$round" --argjson seconds "$seconds" \
        --argjson cpu "$(echo "$peer_cpu" | awk '{print $1 + $2}')" \
        '. + {label: "inprocess", round: $round, cpu_cores: ($cpu / $seconds)}' "$work/peer.json" \
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
    sleep "$(awk -v t="$start_at" -v n="$(date +%s.%N)" 'BEGIN { d = t - n; print (d > 0 ? d : 0) }')"
    machine_before=$(busy_ticks)
    perf_pid=
    if [ -n "$profile" ]; then
        mkdir -p "$profile"
        perf record --call-graph dwarf,32768 -F 499 -p "$server_pid" -o "$profile/https-$round.perf" \
            -- sleep "$seconds" 2>"$profile/https-$round.log" &
        perf_pid=$!
    fi
    for pid in "${pids[@]}"; do wait "$pid"; done
    machine_after=$(busy_ticks) machine_end=$(date +%s.%N)
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    after=$(cpu_ticks "$server_pid")
    # Cores busy on the whole machine while the clients ran: server, clients and anything else.
    machine_cores=$(awk -v t="$((machine_after - machine_before))" -v hz="$ticks_per_second" \
        -v s="$start_at" -v n="$machine_end" 'BEGIN { printf "%.3f", t / hz / (n - s) }')
    jq -s -c --argjson round "$round" --argjson seconds "$seconds" --arg client "$client" \
        --argjson machine_cores "$machine_cores" \
        --argjson server_ticks "$((after - before))" --argjson hz "$ticks_per_second" '{
            label: "https", round: $round, client: $client, clients: length,
            connections_per_client: .[0].connections,
            ops: (map(.ops) | add), errors: (map(.errors) | add),
            ops_per_sec: ((map(.ops) | add) / $seconds),
            client_cpu_cores: ((map(.client_cpu_seconds) | add) / $seconds),
            server_cpu_cores: ($server_ticks / $hz / $seconds),
            machine_busy_cores: $machine_cores
        }' "$work"/client-*.json | tee -a "$results"
done

"$python" bench/unwrap_client.py summary "$results"
