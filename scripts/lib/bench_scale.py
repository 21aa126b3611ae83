#!/usr/bin/env python3
"""The tables of scripts/bench-scale, from its results.json (stdout: markdown).

fleet runs carry examples/produce_fleet.rs's JSON; jvm runs carry the last
line of each ProducerPerformance process, the time it ended ("end T") and
when the run started ("start T"). A process's own elapsed time is its
records over its records/s; placed at its end, the earliest such start to
the latest end is the span the aggregate MB/s is taken over.
"""
import json
import re
import statistics
import sys

PROD = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                  r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")
RECORD = 1024


def jvm_figures(run):
    ends, procs, start = [], [], None
    for line in run["output"].splitlines():
        if line.startswith("end "):
            ends.append(float(line.split()[1]))
        elif line.startswith("start "):
            start = float(line.split()[1])
        else:
            m = PROD.search(line)
            if m:
                procs.append((int(m[1]), float(m[2]), int(m[8]), int(m[9]), float(m[5])))
    if not procs or len(procs) != len(ends):
        return None
    # the ends were appended after each process's line, in the same files:
    # pair them in order
    firsts = [end - n / rate for (n, rate, *_), end in zip(procs, ends)]
    span = max(ends) - min(firsts)
    records = sum(p[0] for p in procs)
    return {
        "records": records,
        "processes": len(procs),
        "mb_per_s": records * RECORD / 1e6 / span,
        "wall_mb_per_s": records * RECORD / 1e6 / (max(ends) - start) if start else None,
        "p99_ms": max(p[2] for p in procs),
        "p999_ms": max(p[3] for p in procs),
        "max_ms": max(p[4] for p in procs),
        "gb": records * RECORD / 1e9,
    }


def fleet_figures(run):
    try:
        f = json.loads(run["output"])
    except json.JSONDecodeError:
        return None
    f["gb"] = f["all_acked_records"] * f["record_size"] / 1e9
    return f


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(path):
    res = json.load(open(path))
    runs = [r for r in res["runs"] if r["round"] > 0]
    contenders = list(dict.fromkeys(r["contender"] for r in runs))  # in order of first run
    table = {}
    for c in contenders:
        for w, fig in (("fleet", fleet_figures), ("jvm", jvm_figures)):
            rows = []
            for r in runs:
                if r["contender"] == c and r["workload"] == w:
                    f = fig(r)
                    if f:
                        f["cpu_s_per_gb"] = r["cpu_s"] / f["gb"] if c != "direct" and f["gb"] else None
                        f["broker_cpu_s_per_gb"] = r["broker_cpu_s"] / f["gb"] if f["gb"] else None
                        rows.append(f)
            table[(c, w)] = rows

    def m(c, w, k):
        return med([row.get(k) for row in table.get((c, w), [])])

    def fmt(v, d=1):
        return "–" if v is None else f"{v:,.{d}f}"

    out = []
    out.append(f"# Many producers at once ({res['date']})\n")
    out.append(f"Commit {res['commit']}, Apache Kafka {res['kafka']} (1 node), {res['cores']} cores "
               f"({res['cpu']}). Load average before the run {res['load_before']}, after "
               f"{res['load_after']}. Medians of {res['rounds']} alternated rounds.\n")
    out.append(f"**fleet**: {res['connections']} connections, each an idempotent acks=all producer "
               f"(examples/produce_fleet.rs, one thread) with one request of 10 x 1 KiB in flight, "
               f"{res['seconds']} s, 16 partitions. **jvm**: {res['jvms']} ProducerPerformance processes "
               f"at once, {res['jvm_records']:,} x 1 KiB each, unthrottled, acks=all, idempotent, "
               f"linger.ms=5, batch.size=65536. CPU: the contender process (utime+stime) and the "
               f"broker, per GB acknowledged.\n")
    out.append("| contender | fleet MB/s | fleet p50 µs | fleet p99 µs | fleet p99.9 µs | fleet max µs "
               "| fleet CPU s/GB | jvm MB/s | jvm p99 ms (slowest) | jvm p99.9 ms | jvm CPU s/GB "
               "| broker CPU s/GB (fleet; jvm) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in contenders:
        out.append(
            f"| {c} | {fmt(m(c, 'fleet', 'mb_per_s'))} | {fmt(m(c, 'fleet', 'p50_us'), 0)} "
            f"| {fmt(m(c, 'fleet', 'p99_us'), 0)} | {fmt(m(c, 'fleet', 'p999_us'), 0)} "
            f"| {fmt(m(c, 'fleet', 'max_us'), 0)} | {fmt(m(c, 'fleet', 'cpu_s_per_gb'), 2)} "
            f"| {fmt(m(c, 'jvm', 'mb_per_s'))} | {fmt(m(c, 'jvm', 'p99_ms'), 0)} "
            f"| {fmt(m(c, 'jvm', 'p999_ms'), 0)} | {fmt(m(c, 'jvm', 'cpu_s_per_gb'), 2)} "
            f"| {fmt(m(c, 'fleet', 'broker_cpu_s_per_gb'), 2)}; {fmt(m(c, 'jvm', 'broker_cpu_s_per_gb'), 2)} |")
    out.append("")

    def ratio(a, b, w, k, pct=True):
        x, y = m(a, w, k), m(b, w, k)
        if x is None or y is None or y == 0:
            return "–"
        return f"{100 * x / y:.1f}%" if pct else f"{x / y:.2f}x"

    out.append("| ratio | fleet MB/s | jvm MB/s | CPU s/GB (fleet) | CPU s/GB (jvm) |")
    out.append("|---|---|---|---|---|")
    for a, b in (("proxy", "forwarder"), ("proxy-1t", "forwarder"), ("proxy-1t", "proxy"),
                 ("forwarder", "direct"), ("proxy", "direct")):
        if (a, "fleet") in table and (b, "fleet") in table:
            cpu = (ratio(a, b, "fleet", "cpu_s_per_gb", False), ratio(a, b, "jvm", "cpu_s_per_gb", False))
            if b == "direct":
                cpu = ("–", "–")
            out.append(f"| {a}/{b} | {ratio(a, b, 'fleet', 'mb_per_s')} | {ratio(a, b, 'jvm', 'mb_per_s')} "
                       f"| {cpu[0]} | {cpu[1]} |")
    out.append("")
    out.append("Per round (fleet MB/s; jvm MB/s):\n")
    for c in contenders:
        f = ", ".join(fmt(row["mb_per_s"]) for row in table.get((c, "fleet"), []))
        j = ", ".join(fmt(row["mb_per_s"]) for row in table.get((c, "jvm"), []))
        errs = sum(row.get("errors", 0) for row in table.get((c, "fleet"), []))
        failed = sum(row.get("failed_connections", 0) for row in table.get((c, "fleet"), []))
        out.append(f"- {c}: {f}; {j} (fleet: {errs} partition errors, {failed} connections failed)")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
