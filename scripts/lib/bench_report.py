#!/usr/bin/env python3
"""The report of scripts/bench, built from what the benchmark measured.

    python3 scripts/lib/bench_report.py <input.json> <output dir>

<input.json> is what scripts/bench collected: the settings, the machine, every
run with its tool's raw output and CPU seconds, the peak RSS, the retry storm
and the cache memory. Every figure in the output is computed here from those
measurements: results.json (medians, ratios, added latency, targets),
results.md (the tables) and throughput.png, latency.png (matplotlib). The
tables are printed on stdout too.
"""
import json, re, statistics, sys, os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storm_report import markdown as storm_markdown

if len(sys.argv) != 3:
    raise SystemExit(__doc__)
inp, out = sys.argv[1], sys.argv[2]
data = json.load(open(inp))
runs = [r for r in data["runs"] if r["round"] > 0]
contenders = []
for r in runs:
    if r["contender"] not in contenders:
        contenders.append(r["contender"])

PROD = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                  r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")

def parse(r):
    text = r["output"]
    if r["workload"] == "probe":
        return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
    if r["workload"] in ("produce", "latency"):
        m = None
        for m in PROD.finditer(text):
            pass
        if not m:
            raise SystemExit(f"no ProducerPerformance summary in {r['contender']} {r['workload']} round {r['round']}")
        g = m.groups()
        return {"records": int(g[0]), "records_s": float(g[1]), "mb_s": float(g[2]), "avg_ms": float(g[3]),
                "max_ms": float(g[4]), "p50_ms": int(g[5]), "p95_ms": int(g[6]), "p99_ms": int(g[7]),
                "p999_ms": int(g[8])}
    lines = [l for l in text.splitlines() if l.strip()]
    head = [h.strip() for h in lines[0].split(",")]
    vals = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(head, vals))
    return {"records": int(row["data.consumed.in.nMsg"]), "mb_s": float(row["MB.sec"]),
            "fetch_mb_s": float(row["fetch.MB.sec"]), "mb": float(row["data.consumed.in.MB"]),
            "rebalance_ms": float(row["rebalance.time.ms"]), "fetch_ms": float(row["fetch.time.ms"])}

for r in runs:
    r["parsed"] = parse(r)

def med(xs):
    return statistics.median(xs) if xs else None

def pick(c, w, f):
    return [f(r) for r in runs if r["contender"] == c and r["workload"] == w]

gb = data["settings"]["records"] * data["settings"]["record_size"] / 1e9
summary = {}
for c in contenders:
    s = {
        "produce_mb_s": med(pick(c, "produce", lambda r: r["parsed"]["mb_s"])),
        "produce_records_s": med(pick(c, "produce", lambda r: r["parsed"]["records_s"])),
        "consume_fetch_mb_s": med(pick(c, "consume", lambda r: r["parsed"]["fetch_mb_s"])),
        "consume_mb_s": med(pick(c, "consume", lambda r: r["parsed"]["mb_s"])),
        "latency_avg_ms": med(pick(c, "latency", lambda r: r["parsed"]["avg_ms"])),
        "latency_p50_ms": med(pick(c, "latency", lambda r: r["parsed"]["p50_ms"])),
        "latency_p99_ms": med(pick(c, "latency", lambda r: r["parsed"]["p99_ms"])),
        "latency_p999_ms": med(pick(c, "latency", lambda r: r["parsed"]["p999_ms"])),
        "latency_max_ms": med(pick(c, "latency", lambda r: r["parsed"]["max_ms"])),
        "probe_avg_us": med(pick(c, "probe", lambda r: r["parsed"]["avg_us"])),
        "probe_p50_us": med(pick(c, "probe", lambda r: r["parsed"]["p50_us"])),
        "probe_p99_us": med(pick(c, "probe", lambda r: r["parsed"]["p99_us"])),
        "probe_p999_us": med(pick(c, "probe", lambda r: r["parsed"]["p999_us"])),
        "probe_max_us": med(pick(c, "probe", lambda r: r["parsed"].get("max_us"))),
        "produce_cpu_s": med(pick(c, "produce", lambda r: r["cpu_s"])),
        "consume_cpu_s": med(pick(c, "consume", lambda r: r["cpu_s"])),
        "latency_cpu_s": med(pick(c, "latency", lambda r: r["cpu_s"])),
        "broker_cpu_s_per_gb_produced": med(pick(c, "produce", lambda r: r["broker_cpu_s"] / gb)),
        "peak_rss_kb": data["peak_rss_kb"].get(c),
    }
    s["cpu_s_per_gb_produced"] = s["produce_cpu_s"] / gb if c != "direct" else None
    s["cpu_s_per_gb_consumed"] = s["consume_cpu_s"] / gb if c != "direct" else None
    s["rounds_produce_mb_s"] = pick(c, "produce", lambda r: r["parsed"]["mb_s"])
    s["rounds_consume_fetch_mb_s"] = pick(c, "consume", lambda r: r["parsed"]["fetch_mb_s"])
    s["rounds_latency_p99_ms"] = pick(c, "latency", lambda r: r["parsed"]["p99_ms"])
    s["rounds_probe_p99_us"] = pick(c, "probe", lambda r: r["parsed"]["p99_us"])
    summary[c] = s

def ratio(a, b, key):
    if a not in summary or b not in summary:
        return None
    x, y = summary[a][key], summary[b][key]
    return None if x is None or not y else x / y

ratios = {}
for a, b in (("proxy", "forwarder"), ("proxy", "direct"), ("forwarder", "direct"), ("peer", "forwarder"), ("peer", "direct")):
    if a in summary and b in summary:
        ratios[f"{a}/{b}"] = {
            "produce": ratio(a, b, "produce_mb_s"),
            "consume": ratio(a, b, "consume_fetch_mb_s"),
            "cpu_per_gb_produced": ratio(a, b, "cpu_s_per_gb_produced") if b != "direct" else None,
        }
added = {c: {k: summary[c][f"latency_{k}_ms"] - summary["direct"][f"latency_{k}_ms"]
             for k in ("avg", "p50", "p99", "p999")} for c in contenders if c != "direct"}
for c in added:
    for k in ("avg", "p50", "p99", "p999"):
        added[c][f"probe_{k}_us"] = summary[c][f"probe_{k}_us"] - summary["direct"][f"probe_{k}_us"]
storms = data["storm"]
targets = {
    "produce >= 98% of forwarder": ratios["proxy/forwarder"]["produce"] >= 0.98,
    "consume >= 95% of forwarder": ratios["proxy/forwarder"]["consume"] >= 0.95,
    "added p99 produce latency <= 1 ms (probe, us)": added["proxy"]["probe_p99_us"] <= 1000,
    "added p99 produce latency <= 1 ms (ProducerPerformance, whole ms)": added["proxy"]["p99"] <= 1,
    "CPU s/GB produced <= 1.3x forwarder": ratios["proxy/forwarder"]["cpu_per_gb_produced"] <= 1.3,
    "1M producer-partitions within 512 MiB": all(m["rss_delta_bytes"] <= 512 * 2**20 and m["heap_bytes"] <= 512 * 2**20
                                                 for m in data["cache_memory"]),
}
for st in storms:
    share = st["answered_share_of_retries"]
    name = f"retry storm ({st['client']}, broker {'paused' if st['fault'] == 'pause' else 'slow'})"
    targets[f"{name}: the proxy answers >= 90% of the client's retried records"] = share is not None and share >= 0.9
    targets[f"{name}: 0 lost, 0 duplicated, no client error"] = st["ok"]
result = {k: data[k] for k in ("date", "commit", "machine", "kafka", "peer", "settings", "peak_rss_kb", "cache_memory")}
result.update({"summary": summary, "ratios": ratios, "added_latency_ms": added, "targets": targets,
               "storm": storms,
               "runs": [{k: v for k, v in r.items() if k != "output"} for r in data["runs"]]})
json.dump(result, open(os.path.join(out, "results.json"), "w"), indent=2)

def f(x, d=1):
    return "–" if x is None else f"{x:.{d}f}"

def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"

s = data["settings"]
md = []
md.append(f"# Benchmark results {data['date']}\n")
md.append(f"Commit {data['commit']}, Apache Kafka {data['kafka']} (1 node), {data['machine']['cores']} cores "
          f"({data['machine']['cpu']}), {data['machine']['mem_kb'] // 1048576} GiB. "
          f"Load average before the run {data.get('load_before', '?')}, after {data.get('load_after', '?')}. "
          f"Medians of {s['rounds']} alternated rounds. Produce: {s['records']} records of {s['record_size']} B, "
          f"acks=all, idempotent, linger.ms=5, batch.size=65536, unthrottled. Consume: the same records "
          f"(fetch MB/s, excluding the group join). Latency: {s['latency_rate']} records/s for "
          f"{s['latency_seconds']} s. CPU: the contender process only (utime+stime).\n")
md.append(f"Peer proxy: {data['peer']}\n")
md.append("| contender | produce MB/s | consume MB/s | p50 ms | p99 ms | p99.9 ms | max ms | avg ms | CPU s/GB produced | CPU s/GB consumed | broker CPU s/GB produced | peak RSS MiB |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for c in contenders:
    x = summary[c]
    md.append(f"| {c} | {f(x['produce_mb_s'], 2)} | {f(x['consume_fetch_mb_s'], 2)} | {f(x['latency_p50_ms'], 0)} | "
              f"{f(x['latency_p99_ms'], 0)} | {f(x['latency_p999_ms'], 0)} | {f(x['latency_max_ms'], 0)} | {f(x['latency_avg_ms'], 2)} | "
              f"{f(x['cpu_s_per_gb_produced'], 2)} | {f(x['cpu_s_per_gb_consumed'], 2)} | "
              f"{f(x['broker_cpu_s_per_gb_produced'], 1)} | {f(x['peak_rss_kb'] / 1024 if x['peak_rss_kb'] else None, 1)} |")
md.append("")
md.append("| ratio | produce | consume | CPU/GB produced |")
md.append("|---|---|---|---|")
for k, v in ratios.items():
    md.append(f"| {k} | {pct(v['produce'])} | {pct(v['consume'])} | {f(v['cpu_per_gb_produced'], 2) + 'x' if v['cpu_per_gb_produced'] else '–'} |")
md.append("")
md.append("Produce round trip measured by examples/produce_latency.rs (microseconds, medians of rounds):\n")
md.append("| contender | avg us | p50 us | p99 us | p99.9 us | max us |")
md.append("|---|---|---|---|---|---|")
for c in contenders:
    x = summary[c]
    md.append(f"| {c} | {f(x['probe_avg_us'], 0)} | {f(x['probe_p50_us'], 0)} | {f(x['probe_p99_us'], 0)} | {f(x['probe_p999_us'], 0)} | {f(x['probe_max_us'], 0)} |")
md.append("")
md.append("| added latency vs direct | avg ms | p50 ms | p99 ms | p99.9 ms | probe avg us | probe p50 us | probe p99 us | probe p99.9 us |")
md.append("|---|---|---|---|---|---|---|---|---|")
for c, v in added.items():
    md.append(f"| {c} | {v['avg']:+.2f} | {v['p50']:+.0f} | {v['p99']:+.0f} | {v['p999']:+.0f} | "
              f"{v['probe_avg_us']:+.0f} | {v['probe_p50_us']:+.0f} | {v['probe_p99_us']:+.0f} | {v['probe_p999_us']:+.0f} |")
md.append("")
md.append("Per round (produce MB/s; consume MB/s; ProducerPerformance p99 ms; probe p99 us):\n")
for c in contenders:
    x = summary[c]
    md.append(f"- {c}: {', '.join(f(v, 1) for v in x['rounds_produce_mb_s'])}; "
              f"{', '.join(f(v, 1) for v in x['rounds_consume_fetch_mb_s'])}; "
              f"{', '.join(str(v) for v in x['rounds_latency_p99_ms'])}; "
              f"{', '.join(str(v) for v in x['rounds_probe_p99_us'])}")
md.append("")
md.append("Retry storms through the proxy (scripts/storm: requests time out after 1 s while the broker is paused):\n")
md.extend(storm_markdown(storms))
md.append("")
for m in data["cache_memory"]:
    md.append(f"Dedup cache, {m['producer_partitions']} producer-partitions x {m['batches_per_entry']} committed "
              f"batch(es): heap {m['heap_bytes'] / 1048576:.0f} MiB ({m['heap_bytes_per_entry']:.0f} B each), "
              f"RSS +{m['rss_delta_bytes'] / 1048576:.0f} MiB ({m['rss_bytes_per_entry']:.0f} B each).\n")
md.append("| target | holds |")
md.append("|---|---|")
for k, v in targets.items():
    md.append(f"| {k} | {'yes' if v else 'NO'} |")
open(os.path.join(out, "results.md"), "w").write("\n".join(md) + "\n")

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
colors = {"direct": "#4c72b0", "forwarder": "#8c8c8c", "proxy": "#dd8452", "peer": "#55a868"}
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, key, title in ((axes[0], "produce_mb_s", "Produce MB/s"), (axes[1], "consume_fetch_mb_s", "Consume (fetch) MB/s"),
                       (axes[2], "cpu_s_per_gb_produced", "Contender CPU s per GB produced")):
    cs = [c for c in contenders if summary[c][key] is not None]
    vals = [summary[c][key] for c in cs]
    bars = ax.bar(cs, vals, color=[colors.get(c, "#999") for c in cs])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_title(title)
    if key != "cpu_s_per_gb_produced":
        for c in cs:
            rounds = summary[c]["rounds_produce_mb_s" if key == "produce_mb_s" else "rounds_consume_fetch_mb_s"]
            ax.scatter([c] * len(rounds), rounds, color="black", s=10, zorder=3)
fig.suptitle(f"kafka-dedup-proxy {data['commit']}: medians of {s['rounds']} alternated rounds (dots: rounds)")
fig.tight_layout()
fig.savefig(os.path.join(out, "throughput.png"), dpi=100)

fig, axes = plt.subplots(1, 2, figsize=(13, 4))
ks = ["p50", "p99", "p999"]
w = 0.8 / len(contenders)
for ax, fmt, unit, title in ((axes[0], "latency_{}_ms", "ms", "ProducerPerformance (whole ms)"),
                             (axes[1], "probe_{}_us", "us", "produce_latency probe (us)")):
    for i, c in enumerate(contenders):
        vals = [summary[c][fmt.format(k)] for k in ks]
        bars = ax.bar([j + i * w for j in range(len(ks))], vals, w, label=c, color=colors.get(c, "#999"))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([j + w * (len(contenders) - 1) / 2 for j in range(len(ks))], ["p50", "p99", "p99.9"])
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend()
fig.suptitle(f"Produce latency at {s['latency_rate']} records/s, acks=all: medians of {s['rounds']} rounds")
fig.tight_layout()
fig.savefig(os.path.join(out, "latency.png"), dpi=100)
print("\n".join(md))
