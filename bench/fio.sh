#!/usr/bin/env bash
# fio over NBD: sealdisk disks against NBD peers on the same machine, interleaved in one run.
#
#   bench/fio.sh [--seconds 10] [--rounds 3] [--size 1] [--seq-qd 4] [--ramp 1]
#                [--servers LIST] [--tls off|on|both] [--tls-servers LIST]
#                [--workloads LIST] [--server-bin PATH] [--no-build] [--no-crypto]
#                [--no-sync] [--tmpdir DIR] [--keep-rounds FILE] [--profile [LIST]]
#
# Servers (LIST is comma-separated; default: all of them, in this order):
#   sealdisk       target/release/sealdisk serve, one platform-key disk (AES-256-XTS, 4 KiB units)
#   sealdisk-cmk   a customer-key disk (EncryptionAtRestWithCustomerKey) of the same server: its
#                  DEK wrapped by an RSA-3072 key of a sealdisk vault through a disk encryption set
#   sealdisk-double  a double-encrypted disk (EncryptionAtRestWithPlatformAndCustomerKeys) of the
#                  same server: two XTS layers, customer key inside, platform key outside
#   nbdkit-file    nbdkit file plugin on a raw file
#   nbdkit-luks    nbdkit luks filter over the file plugin, LUKS1 aes-xts-plain64 image
#   qemu-nbd-luks  qemu-nbd, driver=luks, LUKS1 aes-xts-plain64 image
#   qemu-nbd-raw   qemu-nbd on a raw file
#   nbdkit-memory  nbdkit memory plugin (no storage, no crypto: the protocol ceiling)
# Workloads (default: all; each SECONDS after RAMP seconds of warm-up, fio's nbd engine, one
# connection per job):
#   randread-4k-qd1 randread-4k-qd16 read-1m-qd4 randwrite-4k-qd1 randwrite-4k-qd16 write-1m-qd4
#   (the sequential queue depth is --seq-qd; the names follow it).
#
# Every target gets SIZE GiB, its backing file created fresh in one mktemp directory (so on one
# filesystem) and filled once through its own server with the same fio sequential write (same
# seed and --refill_buffers, so the same plaintext everywhere: checked by reading every export
# back with nbdcopy and comparing SHA-256; sealdisk's volume files are also checked to hold none
# of sampled plaintext units) before anything is measured. The sealdisk kinds are three disks of
# one `sealdisk serve` process (its CPU is counted for whichever disk is being measured); the
# vault, key, sets and access policies are made with the sealdisk CLI as in bench/cmk.sh.
# Then ROUNDS rounds; in each round every workload runs on every server in turn (A, B, C, ...
# then the next workload), each run after a `sync` (no dirty pages left over from the previous
# run; --no-sync skips it). With --tls both (default), the same matrix runs again with TLS on
# every server (fio's nbd engine speaks nbds://). Prints every measurement as a JSON line, then
# the medians, the ratios sealdisk / peer, the ratios of each sealdisk kind to the platform-key
# disk and to qemu-nbd-raw, and the targets (bench/fio_report.py). With --profile, after the
# TLS-off rounds every workload runs once more per server in LIST (default sealdisk) under
# `perf record -e cpu-clock` attached to the server (not counted in the results), and the
# profile's top shared objects and symbols are printed. See BENCHMARKS.md, "fio over NBD".
set -euo pipefail

seconds=10 rounds=3 size_gib=1 seq_qd=4 ramp=1 tls=both build=1 server_bin= crypto=1 do_sync=1
all_servers=sealdisk,sealdisk-cmk,sealdisk-double,nbdkit-file,nbdkit-luks,qemu-nbd-luks,qemu-nbd-raw,nbdkit-memory
servers=$all_servers tls_servers= workloads= tmp_parent=${TMPDIR:-/tmp} keep_rounds= profile=
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --size) size_gib=$2; shift 2 ;;
        --seq-qd) seq_qd=$2; shift 2 ;;
        --ramp) ramp=$2; shift 2 ;;
        --servers) servers=$2; shift 2 ;;
        --tls) tls=$2; shift 2 ;;
        --tls-servers) tls_servers=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --server-bin) server_bin=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-crypto) crypto=0; shift ;;
        --no-sync) do_sync=0; shift ;;
        --tmpdir) tmp_parent=$2; shift 2 ;;
        --keep-rounds) keep_rounds=$2; shift 2 ;;
        --profile)
            if [ $# -gt 1 ] && [[ "$2" != --* ]]; then profile=$2; shift 2; else profile=sealdisk; shift; fi ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$tls" in off | on | both) ;; *) echo "--tls off, on or both" >&2; exit 2 ;; esac
[[ "$size_gib" =~ ^[1-9][0-9]*$ ]] || { echo "--size is a whole number of GiB" >&2; exit 2; }
tls_servers=${tls_servers:-$servers}
default_workloads="randread-4k-qd1 randread-4k-qd16 read-1m-qd$seq_qd randwrite-4k-qd1 randwrite-4k-qd16 write-1m-qd$seq_qd"
workloads=${workloads:-$default_workloads}
workloads=${workloads//,/ }

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ -z "$profile" ] || command -v perf >/dev/null || { echo "--profile needs perf" >&2; exit 1; }
for tool in fio nbdkit qemu-nbd qemu-img cryptsetup nbdinfo openssl jq python3 setpriv curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
size_bytes=$((size_gib << 30))

log() { echo "# $*" >&2; }
show() { printf '+' >&2; printf ' %q' "$@" >&2; echo >&2; }

# ---------------------------------------------------------------------------------------------
# Build (sealdisk is skipped, with the reason, if it does not build or start).
is_sealdisk() { case "$1" in sealdisk | sealdisk-cmk | sealdisk-double) return 0 ;; esac; return 1; }
want_sealdisk=0
for s in ${servers//,/ } ${tls_servers//,/ }; do is_sealdisk "$s" && want_sealdisk=1; done
crypto_example=
if [ -f crates/blockstore/examples/store_throughput.rs ]; then
    crypto_example=store_throughput
fi
[ "$crypto" = 1 ] || crypto_example=
sealdisk_skip=
if [ "$want_sealdisk" = 1 ] && [ "$build" = 1 ] && [ -z "$server_bin" ]; then
    if ! cargo build --release -p sealdisk >&2; then
        sealdisk_skip="cargo build --release -p sealdisk failed"
    fi
fi
if [ -n "$crypto_example" ] && [ "$build" = 1 ]; then
    cargo build --release -p blockstore --example "$crypto_example" >&2 || {
        log "crypto comparison skipped: cargo build --release -p blockstore --example $crypto_example failed"
        crypto_example=
    }
fi
server_bin=${server_bin:-$repo/target/release/sealdisk}
if [ "$want_sealdisk" = 1 ] && [ -z "$sealdisk_skip" ] && [ ! -x "$server_bin" ]; then
    sealdisk_skip="no $server_bin"
fi
crypto_bin=
[ -z "$crypto_example" ] || crypto_bin=$repo/target/release/examples/$crypto_example

# ---------------------------------------------------------------------------------------------
# Work directory, processes, cleanup.
work=$(mktemp -d "$tmp_parent/sealdisk-fio.XXXXXX")
mkdir -p "$work/logs" "$work/out"
declare -A pid=() uri=()
# Private copies: a rebuild in the shared target directory during the run changes nothing here.
if [ "$want_sealdisk" = 1 ] && [ -z "$sealdisk_skip" ]; then
    cp -p "$server_bin" "$work/sealdisk"
    server_bin=$work/sealdisk
fi
if [ -n "$crypto_bin" ]; then
    if [ -x "$crypto_bin" ]; then cp -p "$crypto_bin" "$work/$crypto_example"; crypto_bin=$work/$crypto_example
    else log "crypto comparison skipped: no $crypto_bin"; crypto_bin=; fi
fi
cleanup() {
    local p
    for p in "${pid[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pid[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$keep_rounds" ] && [ -s "$work/rounds.jsonl" ]; then
        cp "$work/rounds.jsonl" "$keep_rounds"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# log_of NAME: the server's log (the sealdisk kinds share one).
log_of() { if is_sealdisk "$1"; then echo "$work/logs/sealdisk.log"; else echo "$work/logs/$1.log"; fi; }

# wait_nbd NAME URI: until the export answers with at least SIZE bytes (or the server died).
wait_nbd() {
    local name=$1 u=$2 size
    for _ in $(seq 300); do
        if size=$(nbdinfo --size "$u" 2>/dev/null); then
            if [ "$size" -lt "$size_bytes" ]; then
                log "$name: export is $size bytes, fewer than $size_bytes"
                return 1
            fi
            return 0
        fi
        kill -0 "${pid[$name]}" 2>/dev/null || { log "$name died:"; tail -20 "$(log_of "$name")" >&2; return 1; }
        sleep 0.1
    done
    log "$name: no NBD answer at $u"
    return 1
}

stop_server() {
    local name=$1 s p
    [ -n "${pid[$name]:-}" ] || return 0
    p=${pid[$name]}
    unset "pid[$name]" "uri[$name]"
    # The sealdisk kinds share one process: it stops with the last of them.
    if is_sealdisk "$name"; then
        for s in sealdisk sealdisk-cmk sealdisk-double; do
            [ -z "${pid[$s]:-}" ] || return 0
        done
        sealdisk_pid=
    fi
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# Backing files and TLS credentials, created once.
passphrase=sealdisk-bench-passphrase
printf '%s' "$passphrase" >"$work/passphrase"
chmod 600 "$work/passphrase"

make_tls() {
    local d=$work/tls
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench-ca -keyout "$d/ca-key.pem" -out "$d/ca-cert.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$d/server-key.pem" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca-cert.pem" -CAkey "$d/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$d/ext" -out "$d/server-cert.pem" 2>/dev/null
    rm -f "$d/server.csr" "$d/ext" "$d/ca-cert.srl"
}

# LUKS1 (nbdkit's luks filter and qemu's luks driver read LUKSv1 only, whose sectors are 512
# bytes): aes-xts-plain64, 512-bit key, PBKDF2 with the minimum 1000 iterations (only opening
# is affected). The payload starts at 2 MiB; the image is SIZE plus that.
make_luks() {
    local img=$1
    truncate -s $((size_bytes + (2 << 20))) "$img"
    show cryptsetup luksFormat -q --type luks1 --cipher aes-xts-plain64 --key-size 512 \
        --hash sha256 --pbkdf-force-iterations 1000 --key-file "$work/passphrase" "$img"
    cryptsetup luksFormat -q --type luks1 --cipher aes-xts-plain64 --key-size 512 \
        --hash sha256 --pbkdf-force-iterations 1000 --key-file "$work/passphrase" "$img" >&2
}

prepare_files() {
    local s
    for s in ${servers//,/ } ${tls_servers//,/ }; do
        case "$s" in
            nbdkit-file | qemu-nbd-raw)
                [ -e "$work/$s.raw" ] || truncate -s "$size_bytes" "$work/$s.raw" ;;
            nbdkit-luks | qemu-nbd-luks)
                [ -e "$work/$s.luks" ] || make_luks "$work/$s.luks" ;;
            sealdisk | sealdisk-cmk | sealdisk-double | nbdkit-memory) ;;
            *) echo "unknown server $s" >&2; exit 2 ;;
        esac
    done
}

# ---------------------------------------------------------------------------------------------
# Servers. start_NAME TLS (0 or 1) sets pid[NAME] and uri[NAME].
export_name=bench

nbdkit_tls_args() {
    if [ "$1" = 1 ]; then echo "--tls=require --tls-certificates=$work/tls"; else echo "--tls=off"; fi
}

start_nbdkit() {
    local name=$1 t=$2 port
    shift 2
    port=$(free_port)
    # shellcheck disable=SC2046
    set -- nbdkit --exit-with-parent -f -p "$port" -i 127.0.0.1 $(nbdkit_tls_args "$t") \
        -e "$export_name" "$@"
    show "$@"
    "$@" >"$work/logs/$name.log" 2>&1 &
    pid[$name]=$!
    uri[$name]=$([ "$t" = 1 ] && echo nbds || echo nbd)://127.0.0.1:$port/$export_name
}

start_qemu_nbd() {
    local name=$1 t=$2 port tls_args=()
    shift 2
    port=$(free_port)
    if [ "$t" = 1 ]; then
        tls_args=(--object "tls-creds-x509,id=tls0,endpoint=server,dir=$work/tls,verify-peer=off"
            --tls-creds=tls0)
    fi
    # --persistent: serve every connection in turn; --shared=8: fio may hold two at once.
    set -- qemu-nbd -b 127.0.0.1 -p "$port" -x "$export_name" --persistent --shared=8 \
        "${tls_args[@]}" "$@"
    show "$@"
    setpriv --pdeathsig TERM "$@" >"$work/logs/$name.log" 2>&1 &
    pid[$name]=$!
    uri[$name]=$([ "$t" = 1 ] && echo nbds || echo nbd)://127.0.0.1:$port/$export_name
}

start_nbdkit-file() { start_nbdkit nbdkit-file "$1" file "file=$work/nbdkit-file.raw"; }
start_nbdkit-luks() {
    start_nbdkit nbdkit-luks "$1" --filter=luks file "file=$work/nbdkit-luks.luks" \
        "passphrase=+$work/passphrase"
}
start_nbdkit-memory() { start_nbdkit nbdkit-memory "$1" memory "size=$size_bytes"; }
start_qemu-nbd-raw() { start_qemu_nbd qemu-nbd-raw "$1" -f raw "$work/qemu-nbd-raw.raw"; }
start_qemu-nbd-luks() {
    start_qemu_nbd qemu-nbd-luks "$1" --object "secret,id=sec0,file=$work/passphrase" \
        --image-opts "driver=luks,key-secret=sec0,file.filename=$work/qemu-nbd-luks.luks"
}

# sealdisk: one server process and one data directory for the whole run, one disk per sealdisk
# kind; with TLS the server restarts on the same data directory.
sealdisk_cli() { SEALDISK_CONFIG_DIR=$work/sealdisk-cli "$server_bin" "$@"; }
sealdisk_pid= sealdisk_set_up=0
declare -A sealdisk_disk=([sealdisk]=d1 [sealdisk-cmk]=d-cmk [sealdisk-double]=d-double)
declare -A sealdisk_type=([sealdisk-cmk]=EncryptionAtRestWithCustomerKey
    [sealdisk-double]=EncryptionAtRestWithPlatformAndCustomerKeys)
declare -A sealdisk_set=([sealdisk-cmk]=cmk-set [sealdisk-double]=double-set)

# sealdisk_setup: the group, and for the customer-key kinds the vault (purge protection), its
# RSA-3072 key, a set per encryption type and the access policy (get, wrapKey, unwrapKey) of
# each set's identity; then a disk per sealdisk kind the run measures.
sealdisk_setup() {
    local s kinds=() kid oid what
    for s in sealdisk sealdisk-cmk sealdisk-double; do
        [[ ",$servers,$tls_servers," == *",$s,"* ]] && kinds+=("$s")
    done
    show sealdisk group create -n bench -l eastus
    sealdisk_cli group create -n bench -l eastus >/dev/null || return 1
    if [[ " ${kinds[*]} " == *" sealdisk-"* ]]; then
        show sealdisk keyvault create -n bench-kv -g bench --enable-purge-protection true
        sealdisk_cli keyvault create -n bench-kv -g bench --enable-purge-protection true \
            >/dev/null || return 1
        show sealdisk keyvault key create --vault-name bench-kv -n disk-key --kty RSA --size 3072
        kid=$(sealdisk_cli keyvault key create --vault-name bench-kv -n disk-key --kty RSA \
            --size 3072 --query key.kid -o tsv) || return 1
    fi
    for s in "${kinds[@]}"; do
        [ -n "${sealdisk_set[$s]:-}" ] || continue
        show sealdisk disk-encryption-set create -g bench -n "${sealdisk_set[$s]}" --key-url "$kid" \
            --source-vault bench-kv --encryption-type "${sealdisk_type[$s]}"
        oid=$(sealdisk_cli disk-encryption-set create -g bench -n "${sealdisk_set[$s]}" \
            --key-url "$kid" --source-vault bench-kv --encryption-type "${sealdisk_type[$s]}" \
            --query identity.principalId -o tsv) || return 1
        show sealdisk keyvault set-policy --name bench-kv --object-id "$oid" \
            --key-permissions get wrapKey unwrapKey
        sealdisk_cli keyvault set-policy --name bench-kv --object-id "$oid" \
            --key-permissions get wrapKey unwrapKey >/dev/null || return 1
    done
    for s in "${kinds[@]}"; do
        set -- disk create -g bench -n "${sealdisk_disk[$s]}" --size-gb "$size_gib"
        [ -z "${sealdisk_set[$s]:-}" ] ||
            set -- "$@" --encryption-type "${sealdisk_type[$s]}" --disk-encryption-set "${sealdisk_set[$s]}"
        show sealdisk "$@"
        sealdisk_cli "$@" >/dev/null || return 1
        what=$(sealdisk_cli disk show -g bench -n "${sealdisk_disk[$s]}" \
            --query encryption.type -o tsv) || return 1
        [ -z "${sealdisk_set[$s]:-}" ] || what+=" through set ${sealdisk_set[$s]}, key $kid"
        echo "# $s: disk ${sealdisk_disk[$s]}, $what"
    done
}

# start_sealdisk_server TLS: the server, unless it already runs (for another sealdisk kind).
start_sealdisk_server() {
    local t=$1 data=$work/sealdisk-data endpoint
    if [ -n "$sealdisk_pid" ] && kill -0 "$sealdisk_pid" 2>/dev/null; then return 0; fi
    rm -f "$data/connection.json"
    set -- "$server_bin" serve --data-dir "$data" --listen localhost:0 --nbd-listen 127.0.0.1:0 \
        --nbd-tls "$([ "$t" = 1 ] && echo on || echo off)"
    show "$@"
    setpriv --pdeathsig TERM "$@" >>"$work/logs/sealdisk.log" 2>&1 &
    sealdisk_pid=$!
    for _ in $(seq 600); do
        if [ -s "$data/connection.json" ] && [ -s "$data/tls/ca-cert.pem" ]; then
            endpoint=$(jq -r .endpoint "$data/connection.json")
            curl -sf --cacert "$data/tls/ca-cert.pem" "${endpoint%/}/healthz" >/dev/null && break
        fi
        kill -0 "$sealdisk_pid" 2>/dev/null || { tail -20 "$work/logs/sealdisk.log" >&2; return 1; }
        sleep 0.1
    done
    mkdir -p "$work/sealdisk-cli"
    show sealdisk login --connection-file "$data/connection.json"
    sealdisk_cli login --connection-file "$data/connection.json" >/dev/null || return 1
    if [ "$sealdisk_set_up" = 0 ]; then
        sealdisk_setup || { sealdisk_skip="setting up its disks failed (log above)"; return 1; }
        sealdisk_set_up=1
    fi
}

# start_sealdisk_kind NAME TLS: the server, and a write grant on NAME's disk.
start_sealdisk_kind() {
    local name=$1 t=$2 disk=${sealdisk_disk[$1]} sas rc=0
    start_sealdisk_server "$t" || rc=1
    # Recorded even on failure, so that stop_server ends a server no other kind uses.
    [ -z "$sealdisk_pid" ] || pid[$name]=$sealdisk_pid
    [ "$rc" = 0 ] || return 1
    show sealdisk disk grant-access -g bench -n "$disk" --access-level Write \
        --duration-in-seconds 86400 --query accessSAS -o tsv
    sas=$(sealdisk_cli disk grant-access -g bench -n "$disk" --access-level Write \
        --duration-in-seconds 86400 --query accessSAS -o tsv) || return 1
    log "$name export: ${sas%/*}/<export>"
    # fio and nbdinfo: 127.0.0.1, the address the NBD listener is bound to.
    uri[$name]=$(sed -E 's#^(nbds?://)localhost:#\1127.0.0.1:#' <<<"$sas")
    case "${uri[$name]}" in
        nbd://* | nbds://*) ;;
        *) log "$name: grant-access returned '$sas', not an NBD URI"; return 1 ;;
    esac
}
start_sealdisk() { start_sealdisk_kind sealdisk "$1"; }
start_sealdisk-cmk() { start_sealdisk_kind sealdisk-cmk "$1"; }
start_sealdisk-double() { start_sealdisk_kind sealdisk-double "$1"; }

# ---------------------------------------------------------------------------------------------
# fio.
# The engine comes first: --uri is one of its options.
fio_common=(--ioengine=nbd --numjobs=1 --norandommap --randrepeat=1
    --randseed=20261124)

# run_fio NAME OUT ARGS...: fio against NAME's URI, JSON into OUT, with the server's CPU time.
ticks_per_second=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

fill() {
    local name=$1 started ended
    started=$(date +%s.%N)
    show fio --name=fill "${fio_common[@]}" "--uri=${uri[$name]}" --rw=write --bs=1M --iodepth=4 --refill_buffers \
        --size="$size_bytes" --output-format=json
    fio --name=fill "${fio_common[@]}" "--uri=${uri[$name]}" --rw=write --bs=1M --iodepth=4 --refill_buffers \
        --size="$size_bytes" --output-format=json --output="$work/out/fill-$name.json" \
        >"$work/logs/fio-fill-$name.log" 2>&1 || {
        log "$name: fill failed"; cat "$work/logs/fio-fill-$name.log" >&2; return 1; }
    ended=$(date +%s.%N)
    sed -i -n '/^{/,$p' "$work/out/fill-$name.json"
    jq -c --arg server "$name" --arg s "$(awk "BEGIN {print $ended - $started}")" \
        '{fill: $server, seconds: ($s | tonumber), write_MBps: (.jobs[0].write.bw_bytes / 1e6),
          error: .jobs[0].error}' "$work/out/fill-$name.json" >&2
}

workload_args() {
    case "$1" in
        randread-4k-qd*) echo "--rw=randread --bs=4k --iodepth=${1##*qd}" ;;
        randwrite-4k-qd*) echo "--rw=randwrite --bs=4k --iodepth=${1##*qd}" ;;
        read-1m-qd*) echo "--rw=read --bs=1M --iodepth=${1##*qd}" ;;
        write-1m-qd*) echo "--rw=write --bs=1M --iodepth=${1##*qd}" ;;
        *) echo "unknown workload $1" >&2; return 1 ;;
    esac
}

measure() {
    local name=$1 workload=$2 round=$3 t=$4 out before after args
    out=$work/out/$name-$workload-$round-$t.json
    args=$(workload_args "$workload")
    [ "$do_sync" = 0 ] || sync
    before=$(cpu_ticks "${pid[$name]}")
    # shellcheck disable=SC2086
    if ! fio --name="$workload" "${fio_common[@]}" "--uri=${uri[$name]}" $args \
        --size="$size_bytes" --time_based --runtime="$seconds" --ramp_time="$ramp" \
        --output-format=json --output="$out" >"$work/logs/fio-last.log" 2>&1; then
        log "$name $workload round $round: fio failed"
        cat "$work/logs/fio-last.log" >&2
        jq -nc --arg server "$name" --arg workload "$workload" --argjson round "$round" \
            --argjson tls "$t" '{server: $server, workload: $workload, round: $round,
            tls: ($tls == 1), error: "fio failed"}' | tee -a "$work/rounds.jsonl"
        return 0
    fi
    after=$(cpu_ticks "${pid[$name]}")
    sed -i -n '/^{/,$p' "$out"   # engine messages may precede the JSON
    # The server's CPU covers ramp and runtime; fio's own CPU (usr+sys, % of one core) too.
    jq -c --arg server "$name" --arg workload "$workload" --argjson round "$round" \
        --argjson tls "$t" --argjson ticks "$((after - before))" --argjson hz "$ticks_per_second" \
        --argjson wall "$(awk "BEGIN {print $seconds + $ramp}")" '
        .jobs[0] as $j
        | (if ($j["job options"].rw | test("read")) then $j.read else $j.write end) as $d
        | {server: $server, workload: $workload, round: $round, tls: ($tls == 1),
           iops: $d.iops, MBps: ($d.bw_bytes / 1e6),
           p50_us: ($d.clat_ns.percentile["50.000000"] / 1e3),
           p99_us: ($d.clat_ns.percentile["99.000000"] / 1e3),
           mean_us: ($d.clat_ns.mean / 1e3), error: $j.error,
           server_cpu_cores: ($ticks / $hz / $wall),
           fio_cpu_cores: (($j.usr_cpu + $j.sys_cpu) / 100)}' "$out" | tee -a "$work/rounds.jsonl"
}

# ---------------------------------------------------------------------------------------------
echo "# fio over NBD, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# nproc $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); kernel $(uname -r)"
echo "# $(fio --version); $(nbdkit --version | head -1); $(qemu-nbd --version | head -1); $(nbdinfo --version | tail -1); $(cryptsetup --version)"
echo "# size ${size_gib} GiB per target, ${seconds} s per measurement after ${ramp} s ramp, ${rounds} rounds, sequential QD ${seq_qd}, work dir on $(df --output=source,fstype "$work" | tail -1 | tr -s ' ')"
echo "# workloads: $workloads"
if [ "$want_sealdisk" = 1 ] && [ -z "$sealdisk_skip" ]; then
    echo "# sealdisk: $server_bin, built $(date -u -r "$server_bin" +%Y-%m-%dT%H:%M:%SZ), tree $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)$(git -C "$repo" status --porcelain 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
fi
echo "# fio options for all: ${fio_common[*]} --size=$size_bytes --time_based --runtime=$seconds --ramp_time=$ramp"

prepare_files
make_tls

crypto_round() {
    [ -n "$crypto_bin" ] || return 0
    "$crypto_bin" >"$work/out/crypto-$1.txt" \
        2>"$work/logs/crypto-$1.log" || {
        log "crypto comparison failed:"; cat "$work/out/crypto-$1.txt" "$work/logs/crypto-$1.log" >&2
        return 0; }
    sed 's/^/# crypto: /' "$work/out/crypto-$1.txt"
    # Lines "LABEL   GB/S   [ratio R]" become JSON lines {crypto, round, label, gbps, ratio}.
    python3 - "$work/out/crypto-$1.txt" "$1" <<'EOF' | tee -a "$work/rounds.jsonl"
import json, re, sys
for line in open(sys.argv[1]):
    m = re.match(r"^\s*(\S.*?)\s{2,}(\d+(?:\.\d+)?)(?:\s+ratio\s+(\d+(?:\.\d+)?))?\s*$", line)
    if m:
        rec = {"crypto": True, "round": int(sys.argv[2]), "label": m.group(1),
               "gbps": float(m.group(2))}
        if m.group(3):
            rec["ratio"] = float(m.group(3))
        print(json.dumps(rec))
EOF
}

# profile_server NAME: every workload once more, perf attached to the server for SECONDS.
profile_server() {
    local name=$1 w args fio_pid data
    for w in $workloads; do
        args=$(workload_args "$w")
        data=$work/out/perf-$name-$w.data
        [ "$do_sync" = 0 ] || sync
        # shellcheck disable=SC2086
        fio --name="$w" "${fio_common[@]}" "--uri=${uri[$name]}" $args --size="$size_bytes" \
            --time_based --runtime="$seconds" --ramp_time="$ramp" --output-format=json \
            --output="$work/out/profile.json" >"$work/logs/fio-last.log" 2>&1 &
        fio_pid=$!
        sleep "$(awk "BEGIN {print $ramp + 0.5}")"
        perf record -e cpu-clock -F 999 -p "${pid[$name]}" -o "$data" -- \
            sleep "$(awk "BEGIN {print $seconds - 1}")" >"$work/logs/perf.log" 2>&1 || {
            log "perf record failed:"; cat "$work/logs/perf.log" >&2; }
        wait "$fio_pid" || true
        sed -i -n '/^{/,$p' "$work/out/profile.json"
        echo "### profile: $name, $w ($(jq -r '.jobs[0] | (if (.["job options"].rw | test("read")) then .read else .write end) | "\(.iops | floor) IOPS"' "$work/out/profile.json" 2>/dev/null), perf record -e cpu-clock -F 999 -p PID)"
        echo '```'
        # awk reads to the end: no SIGPIPE upstream (pipefail).
        perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null \
            | awk '!/^#/ && NF && n++ < 8' || true
        echo
        perf report -i "$data" --no-children --sort dso,sym --stdio 2>/dev/null \
            | awk '!/^#/ && NF && n++ < 25 {print substr($0, 1, 140)}' || true
        echo '```'
    done
}

run_phase() {
    local t=$1 list=$2 s w r started=()
    log "phase: TLS $([ "$t" = 1 ] && echo on || echo off), servers $list"
    for s in ${list//,/ }; do
        if is_sealdisk "$s" && [ -n "$sealdisk_skip" ]; then
            log "$s skipped: $sealdisk_skip"
            continue
        fi
        if ! "start_$s" "$t" || ! wait_nbd "$s" "${uri[$s]}"; then
            log "$s skipped: it did not start (log above; $(log_of "$s"))"
            if is_sealdisk "$s" && [ -z "$sealdisk_skip" ] &&
                { [ -z "$sealdisk_pid" ] || ! kill -0 "$sealdisk_pid" 2>/dev/null; }; then
                sealdisk_skip="it did not start or serve"
            fi
            stop_server "$s"
            continue
        fi
        started+=("$s")
    done
    # Fill: files once (in the first phase that uses them); memory at every start; sealdisk
    # once (its volume persists across its restart).
    local -A fresh=()
    for s in "${started[@]}"; do
        if [ "$s" = nbdkit-memory ] || [ -z "${filled[$s]:-}" ]; then
            if fill "$s"; then filled[$s]=1 fresh[$s]=1; else stop_server "$s"; fi
        fi
    done
    local live=() h
    for s in "${started[@]}"; do [ -n "${pid[$s]:-}" ] && live+=("$s"); done
    # Same content everywhere: the SHA-256 of every freshly filled export, read back in full
    # with nbdcopy (the fill writes the same bytes in every run). Targets kept from an earlier
    # phase hold what that phase's write workloads left.
    for s in "${live[@]}"; do
        [ -n "${fresh[$s]:-}" ] || { echo "# content of $s: kept from the previous phase"; continue; }
        h=$(nbdcopy "${uri[$s]}" - 2>>"$work/logs/nbdcopy.log" | sha256sum | cut -c1-16) ||
            h="(nbdcopy failed: $(tail -1 "$work/logs/nbdcopy.log"))"
        echo "# content of $s after fill: sha256 $h..."
        fill_hash=${fill_hash:-$h}
        [ "$h" = "$fill_hash" ] || log "WARNING: $s does not hold the same bytes as the first target filled"
    done
    # sealdisk stores ciphertext: no sampled 4 KiB unit of the plaintext (a freshly filled raw
    # file of nbdkit-file or qemu-nbd-raw holds the same bytes) appears anywhere in its volume
    # files.
    local plain= sealdisk_fresh=
    for s in nbdkit-file qemu-nbd-raw; do
        [ -z "$plain" ] && [ -n "${fresh[$s]:-}" ] && plain=$work/$s.raw
    done
    for s in sealdisk sealdisk-cmk sealdisk-double; do
        [ -z "${fresh[$s]:-}" ] || sealdisk_fresh=1
    done
    if [ -n "$sealdisk_fresh" ] && [ -n "$plain" ]; then
        python3 - "$plain" "$work"/sealdisk-data/disks/*.disk <<'EOF'
import mmap, sys
plain = open(sys.argv[1], "rb")
units = []
size = plain.seek(0, 2)
for i in range(16):
    plain.seek((i * size // 16) // 4096 * 4096)
    units.append(plain.read(4096))
found = 0
for path in sys.argv[2:]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        found += sum(m.find(u) >= 0 for u in units)
print(f"# sealdisk volume files: {found} of {len(units)} sampled plaintext units found in them"
      + ("" if found else " (ciphertext)"))
EOF
    fi
    for r in $(seq "$rounds"); do
        log "round $r: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        for w in $workloads; do
            for s in "${live[@]}"; do
                measure "$s" "$w" "$r" "$t"
            done
        done
        [ "$t" = 1 ] || crypto_round "$r"
    done
    if [ "$t" = 0 ] && [ -n "$profile" ]; then
        for s in ${profile//,/ }; do
            [ -n "${pid[$s]:-}" ] && profile_server "$s"
        done
    fi
    for s in "${live[@]}"; do stop_server "$s"; done
}

declare -A filled=()
fill_hash=
touch "$work/rounds.jsonl"
if [ "$tls" != on ]; then run_phase 0 "$servers"; fi
if [ "$tls" != off ]; then
    log "TLS: fio's nbd engine connects to nbds:// URIs through libnbd's nbd_connect_uri, which"
    log "refuses the tls-certificates query parameter (local file access), so fio negotiates TLS"
    log "with libnbd's defaults and does not verify the server certificate (handshake only)."
    run_phase 1 "$tls_servers"
fi
[ -z "$sealdisk_skip" ] || log "sealdisk was not measured: $sealdisk_skip"
echo
python3 "$repo/bench/fio_report.py" "$work/rounds.jsonl"
