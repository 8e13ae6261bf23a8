#!/usr/bin/env bash
# Customer-managed keys: rotation of a disk encryption set with N disks, and revocation latency.
#
#   bench/cmk.sh [--disks 1000] [--rounds 3] [--revocation-rounds 5] [--threads 8]
#                [--written 4] [--revoke-via http,cli] [--tmpdir DIR] [--profile]
#                [--server-bin PATH] [--no-build]
#
# Builds `cargo build --release -p sealdisk` (unless --no-build) and runs bench/cmk.py with the
# repo's .venv Python against target/release/sealdisk (or --server-bin). It starts its own
# `sealdisk serve` on ephemeral loopback ports with a fresh temp data dir, stops it and removes
# the dir at exit. Prints one JSON line per measurement, then a summary. See bench/cmk.py.
set -euo pipefail

build=1 server_bin= pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        --server-bin) server_bin=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) pass+=("$1"); shift ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=$repo/.venv/bin/python
[ -x "$python" ] || { echo "no $python: create the repo's .venv (scripts/test does)" >&2; exit 1; }
"$python" -c 'import sys; sys.path.append("/usr/lib/python3/dist-packages"); import nbd' \
    2>/dev/null || { echo "libnbd's Python binding is missing: apt-get install python3-libnbd" >&2; exit 1; }
if [ "$build" = 1 ]; then
    cargo build --release -p sealdisk >&2
fi
server_bin=${server_bin:-$repo/target/release/sealdisk}
exec "$python" "$repo/bench/cmk.py" --server-bin "$server_bin" ${pass[@]+"${pass[@]}"}
