#!/usr/bin/env python3
"""HTTPS unwrapKey load for bench/unwrap.sh. Talks to a running `sealdisk serve`.

  setup    --connection FILE                      creates a resource group, a vault, an RSA key
                                                  and one wrapped value; prints them as JSON
  run      --setup FILE --seconds S --start-at T  unwrapKey in a loop on keep-alive sessions,
           [--connections N]                      one thread per session; prints one JSON line
  summary  FILE...                                medians of the JSON lines in FILE (one per
                                                  round, with a "label") and the ratios

Only the Python standard library and `requests` (the repo's .venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

VAULT_API = "2023-07-01"
RG_API = "2024-11-01"
KV_API = "7.6"
ALG = "RSA-OAEP-256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(conn: dict, ca: str, scope: str) -> str:
    endpoint = conn["endpoint"].rstrip("/") + "/"
    resp = requests.post(
        f"{endpoint}{conn['tenantId']}/oauth2/v2.0/token",
        data={
            "client_id": conn["clientId"],
            "client_secret": conn["clientSecret"],
            "grant_type": "client_credentials",
            "scope": scope,
        },
        verify=ca,
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


def jwt_claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def check(resp: requests.Response, what: str) -> dict:
    if not 200 <= resp.status_code < 300:
        sys.exit(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")
    return resp.json() if resp.content else {}


def setup(args: argparse.Namespace) -> None:
    conn_path = Path(args.connection)
    conn = json.loads(conn_path.read_text())
    ca = str(conn_path.parent / "tls" / "ca-cert.pem")
    endpoint = conn["endpoint"].rstrip("/") + "/"
    port = int(endpoint.rstrip("/").rsplit(":", 1)[1])
    arm_token = token(conn, ca, endpoint + ".default")
    oid = jwt_claims(arm_token)["oid"]
    arm = {"Authorization": f"Bearer {arm_token}"}
    group = f"/subscriptions/{conn['subscriptionId']}/resourceGroups/bench"
    check(requests.put(endpoint + group.lstrip("/"), params={"api-version": RG_API}, headers=arm,
                       json={"location": "eastus"}, verify=ca, timeout=30), "create resource group")
    name = f"bench-{uuid.uuid4().hex[:8]}"
    vault = check(requests.put(
        f"{endpoint}{group.lstrip('/')}/providers/Microsoft.KeyVault/vaults/{name}",
        params={"api-version": VAULT_API}, headers=arm, verify=ca, timeout=30,
        json={"location": "eastus", "properties": {
            "tenantId": conn["tenantId"],
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [{"tenantId": conn["tenantId"], "objectId": oid,
                                "permissions": {"keys": ["all"]}}],
        }}), "create vault")
    vault_uri = vault["properties"]["vaultUri"]
    kv_token = token(conn, ca, f"https://vault.localhost:{port}/.default")
    kv = {"Authorization": f"Bearer {kv_token}"}
    key = check(requests.post(vault_uri + "keys/bench/create", params={"api-version": KV_API},
                              headers=kv, json={"kty": "RSA", "key_size": args.bits},
                              verify=ca, timeout=60), "create key")
    kid = key["key"]["kid"]
    secret = bytes(range(32))
    wrapped = check(requests.post(kid + "/wrapkey", params={"api-version": KV_API}, headers=kv,
                                  json={"alg": ALG, "value": b64url(secret)}, verify=ca,
                                  timeout=60), "wrapKey")
    print(json.dumps({"kid": kid, "token": kv_token, "ca": ca, "value": wrapped["value"],
                      "expect": b64url(secret), "bits": args.bits}))


def run(args: argparse.Namespace) -> None:
    cfg = json.loads(Path(args.setup).read_text())
    url = cfg["kid"] + "/unwrapkey"
    body = json.dumps({"alg": ALG, "value": cfg["value"]})
    headers = {"Authorization": f"Bearer {cfg['token']}", "Content-Type": "application/json"}
    counts = [0] * args.connections
    errors = [0] * args.connections
    deadline = args.start_at + args.seconds

    failures: list[str] = []

    def loop(i: int) -> None:
        # One keep-alive connection per session. `verify` per request: a session's own
        # `verify` loses to REQUESTS_CA_BUNDLE from the environment.
        session = requests.Session()

        def unwrap() -> requests.Response:
            return session.post(url, params={"api-version": KV_API}, data=body,
                                headers=headers, verify=cfg["ca"], timeout=60)

        try:
            # Open the TLS connection and check the answer before the clock starts.
            resp = unwrap()
            if resp.status_code != 200 or resp.json()["value"] != cfg["expect"]:
                raise RuntimeError(f"unwrapKey: HTTP {resp.status_code} {resp.text[:300]}")
            time.sleep(max(0.0, args.start_at - time.time()))
            while time.time() < deadline:
                if unwrap().status_code == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
        except Exception as err:  # reported below, and the exit code says so
            failures.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, args.start_at - time.time()))
    cpu_before = time.process_time()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"{len(failures)} connection(s) failed, first: {failures[0]}")
    cpu = time.process_time() - cpu_before
    print(json.dumps({"bench": "https_unwrap_client", "client": "python",
                      "connections": args.connections,
                      "seconds": args.seconds, "ops": sum(counts), "errors": sum(errors),
                      "client_cpu_seconds": round(cpu, 3)}))


def summary(args: argparse.Namespace) -> None:
    rounds: dict[str, list[dict]] = {}
    for path in args.files:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                rounds.setdefault(rec["label"], []).append(rec)
    out = {}
    for label, recs in rounds.items():
        rates = [r["ops_per_sec"] for r in recs]
        out[label] = {"rounds": [round(x, 1) for x in rates],
                      "median_ops_per_sec": round(statistics.median(rates), 1)}
    base = out.get("inprocess", {}).get("median_ops_per_sec")
    for label, stats in out.items():
        if base and label not in ("inprocess", "audit_probe"):
            stats["ratio_to_inprocess"] = round(stats["median_ops_per_sec"] / base, 3)
    # Each HTTPS round against the in-process round just before it: the machine's load drifts
    # less within a round than across the run.
    peer = {r["round"]: r["ops_per_sec"] for r in rounds.get("inprocess", [])}
    paired = [r["ops_per_sec"] / peer[r["round"]] for r in rounds.get("https", [])
              if peer.get(r["round"])]
    if paired:
        out["https"]["round_ratios"] = [round(x, 3) for x in paired]
        out["https"]["median_round_ratio"] = round(statistics.median(paired), 3)
    for label, keys in (("https", ("server_cpu_cores", "client_cpu_cores", "machine_busy_cores")),
                        ("inprocess", ("cpu_cores",))):
        for key in keys:
            values = [r[key] for r in rounds.get(label, []) if key in r]
            if values:
                out[label][f"median_{key}"] = round(statistics.median(values), 2)
    probe = [r["mean_latency_ms"] for r in rounds.get("audit_probe", [])]
    if probe:
        out["audit_probe"]["median_latency_ms"] = round(statistics.median(probe), 2)
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--connection", required=True)
    p.add_argument("--bits", type=int, default=3072)
    p.set_defaults(func=setup)
    p = sub.add_parser("run")
    p.add_argument("--setup", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--connections", type=int, default=1)
    p.set_defaults(func=run)
    p = sub.add_parser("summary")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=summary)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
