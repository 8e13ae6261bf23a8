#!/usr/bin/env python3
"""Summarize bench/fio.sh measurements (JSON lines) as Markdown tables.

    python3 bench/fio_report.py ROUNDS.jsonl [...]

For every phase (TLS off, TLS on): the median over rounds of IOPS, MB/s, p99 completion
latency and server CPU per workload and server; the ratio sealdisk / peer of the median IOPS
(for a fixed block size, also the ratio of MB/s); the ratio of each sealdisk kind (platform
key, customer key, double encryption) to the platform-key disk and to qemu-nbd-raw; the spread
of IOPS over rounds; and the targets. Standard library only.
"""

import json
import statistics
import sys
from collections import defaultdict

SEALDISK_KINDS = ["sealdisk", "sealdisk-cmk", "sealdisk-double"]
SERVERS = SEALDISK_KINDS + ["nbdkit-file", "nbdkit-luks", "qemu-nbd-luks", "qemu-nbd-raw",
                            "nbdkit-memory"]
# What every sealdisk kind is compared with: the platform-key disk of the same server, and a
# plain file server.
KIND_BASES = ["sealdisk", "qemu-nbd-raw"]
ENCRYPTED_PEERS = ["nbdkit-luks", "qemu-nbd-luks"]


def order(names, known):
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def fmt(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def table(title, header, rows):
    out = [f"**{title}**", "", "| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(paths):
    meas, crypto = [], []
    for path in paths:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                (crypto if rec.get("crypto") else meas).append(rec)

    failures = [r for r in meas if r.get("error")]
    for r in failures:
        print(f"- failed: {r['server']} {r['workload']} round {r['round']} "
              f"(TLS {'on' if r['tls'] else 'off'}): {r['error']}")
    meas = [r for r in meas if not r.get("error")]

    groups = defaultdict(list)
    for r in meas:
        groups[(r["tls"], r["workload"], r["server"])].append(r)

    def med(tls, wl, srv, key):
        rs = groups.get((tls, wl, srv))
        return statistics.median(r[key] for r in rs) if rs else None

    verdicts = []
    for tls in sorted({r["tls"] for r in meas}):
        phase = "TLS on" if tls else "TLS off"
        wls = []
        for r in meas:
            if r["tls"] == tls and r["workload"] not in wls:
                wls.append(r["workload"])
        srvs = order({r["server"] for r in meas if r["tls"] == tls}, SERVERS)
        n_rounds = max(len(v) for k, v in groups.items() if k[0] == tls)
        print(f"### {phase}: medians of {n_rounds} rounds\n")
        rows = [[wl] + [" · ".join([fmt(med(tls, wl, s, "iops"), 0),
                                     fmt(med(tls, wl, s, "MBps")),
                                     fmt(med(tls, wl, s, "p99_us"))])
                        if med(tls, wl, s, "iops") is not None else "–" for s in srvs]
                for wl in wls]
        print(table(f"IOPS · MB/s · p99 completion latency in µs ({phase})",
                    ["workload"] + srvs, rows))
        for key, title, digits in [("server_cpu_cores", "server CPU, cores", 2),
                                   ("fio_cpu_cores", "fio CPU, cores", 2)]:
            rows = [[wl] + [fmt(med(tls, wl, s, key), digits) for s in srvs] for wl in wls]
            print(table(f"{title} ({phase})", ["workload"] + srvs, rows))
        # Spread: (max - min) / median of IOPS over the rounds, per cell.
        rows = []
        for wl in wls:
            row = [wl]
            for s in srvs:
                rs = groups.get((tls, wl, s))
                if not rs:
                    row.append("–")
                    continue
                v = [r["iops"] for r in rs]
                m = statistics.median(v)
                row.append(f"{100 * (max(v) - min(v)) / m:.0f} %" if m else "–")
            rows.append(row)
        print(table(f"IOPS spread over rounds, (max − min) / median ({phase})",
                    ["workload"] + srvs, rows))

        def ratio_cell(wl, mine_srv, peer):
            """The ratio of median IOPS, then in brackets the lowest–highest ratio within one
            round (neighbours in time)."""
            mine, theirs = med(tls, wl, mine_srv, "iops"), med(tls, wl, peer, "iops")
            if mine is None or not theirs:
                return "–"
            cell = fmt(mine / theirs, 2) + "×"
            by_round = {r["round"]: r["iops"] for r in groups.get((tls, wl, peer), [])}
            within = sorted(r["iops"] / by_round[r["round"]]
                            for r in groups.get((tls, wl, mine_srv), [])
                            if by_round.get(r["round"]))
            if len(within) > 1:
                cell += f" ({fmt(within[0], 2)}–{fmt(within[-1], 2)})"
            return cell

        # Each sealdisk kind against the platform-key disk and qemu-nbd-raw.
        pairs = [(k, b) for b in KIND_BASES if b in srvs
                 for k in SEALDISK_KINDS if k in srvs and k != b]
        if any(k != "sealdisk" for k, _ in pairs):
            rows = [[wl] + [ratio_cell(wl, k, b) for k, b in pairs] for wl in wls]
            print(table(f"sealdisk kind ÷ platform-key disk and ÷ qemu-nbd-raw, ratio of median "
                        f"IOPS (in brackets: lowest–highest ratio within one round) ({phase})",
                        ["workload"] + [f"{k} ÷ {b}" for k, b in pairs], rows))
        if "sealdisk" not in srvs:
            print(f"(no platform-key sealdisk measurements with {phase}: "
                  "no sealdisk ÷ peer ratios)\n")
            continue
        peers = [s for s in srvs if s not in SEALDISK_KINDS]
        rows = [[wl] + [ratio_cell(wl, "sealdisk", p) for p in peers] for wl in wls]
        print(table(f"sealdisk ÷ peer, ratio of median IOPS (in brackets: lowest–highest ratio "
                    f"within one round) ({phase})", ["workload"] + peers, rows))

        def check(what, wl, peer, target):
            mine, theirs = med(tls, wl, "sealdisk", "iops"), med(tls, wl, peer, "iops")
            if mine is None or theirs is None:
                verdicts.append((phase, what, wl, peer, target, None))
            else:
                verdicts.append((phase, what, wl, peer, target, mine / theirs))

        for wl in wls:
            check("≥ 1.0× nbdkit-file", wl, "nbdkit-file", 1.0)
        for wl in wls:
            if wl.startswith(("read-", "write-")):
                for p in ENCRYPTED_PEERS:
                    check(f"≥ 3× {p} (sequential)", wl, p, 3.0)
        for wl in wls:
            if wl == "randread-4k-qd16":
                check("≥ 0.8× nbdkit-memory", wl, "nbdkit-memory", 0.8)

    if crypto:
        # One line per label of the example's output: median GB/s and, where it prints one,
        # median ratio to the raw EVP_aes_256_xts loop. The target applies to the encrypt path
        # (the first label with "write" in it), else to the first label with a ratio.
        labels = []
        for c in crypto:
            if c["label"] not in labels:
                labels.append(c["label"])
        rows, target_label = [], None
        for label in labels:
            cs = [c for c in crypto if c["label"] == label]
            gbps = statistics.median(c["gbps"] for c in cs)
            ratios = [c["ratio"] for c in cs if "ratio" in c]
            ratio = statistics.median(ratios) if ratios else None
            rows.append([label, fmt(gbps, 2), fmt(ratio, 2) if ratio is not None else "",
                         ", ".join(fmt(x, 2) for x in ratios)])
            # The target is on the encrypt path NBD writes take (in place), else any write.
            if ratio is not None and "write_in_place" in label:
                target_label = (label, ratio)
            elif ratio is not None and target_label is None and "write" in label.lower():
                target_label = (label, ratio)
        if target_label is None:
            for label in labels:
                ratios = [c["ratio"] for c in crypto if c["label"] == label and "ratio" in c]
                if ratios:
                    target_label = (label, statistics.median(ratios))
                    break
        n = len({c["round"] for c in crypto})
        print(table(f"In-process crypto, one core, medians of {n} runs "
                    "(crates/blockstore/examples/store_throughput)",
                    ["measurement", "GB/s", "ratio to raw", "ratios per run"], rows))
        if target_label:
            verdicts.append(("in process", "≥ 0.9× raw EVP_aes_256_xts loop",
                             target_label[0], "raw", 0.9, target_label[1]))

    if verdicts:
        rows = []
        for phase, what, wl, peer, target, ratio in verdicts:
            if ratio is None:
                verdict = "not measured"
            elif ratio >= target:
                verdict = "met"
            else:
                verdict = f"**missed** by {100 * (1 - ratio / target):.0f} %"
            rows.append([phase, what, wl, fmt(ratio, 2) + "×" if ratio else "–", verdict])
        print(table("Targets", ["phase", "target", "workload", "ratio", "verdict"], rows)
              .replace("|---|---:|---:|---:|---:|", "|---|---|---|---:|---|"))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
