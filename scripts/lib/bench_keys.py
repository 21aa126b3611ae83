#!/usr/bin/env python3
"""Produce throughput and proxy CPU with idempotency-key dedup on vs off.

Run by scripts/bench-keys, which starts a 1-node Kafka and builds the proxy.
One proxy process serves both cases: topics keyed-<codec> match
--key-dedup-topics (every record decoded, its key hashed, claimed and
committed), topics plain-<codec> do not (batches forwarded untouched). The
Java client (ClientHarness) sends RECORDS records of 1024 B with distinct
keys, acks=all, no idempotence (key dedup reads only such batches),
linger.ms=5, batch.size=65536; uncompressed and lz4; ROUNDS alternated
rounds, medians. CPU is the proxy process's utime+stime from /proc.

    python3 scripts/lib/bench_keys.py OUT_DIR PROXY_BIN KAFKA_BOOTSTRAP
"""

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from procstat import cpu_seconds, status_kib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS = int(os.environ.get("BENCH_KEYS_RECORDS", "200000"))
ROUNDS = int(os.environ.get("BENCH_KEYS_ROUNDS", "3"))
CODECS = ["none", "lz4"]
LISTEN, METRICS = "127.0.0.1:39592", "127.0.0.1:39600"


def harness(*args):
    out = subprocess.run([os.path.join(REPO, "scripts/kafka"), "run", "ClientHarness", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def metric(name, label=""):
    text = urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    out_dir, proxy_bin, bootstrap = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    proxy = subprocess.Popen(
        [proxy_bin, "--upstream", bootstrap, "--listen", LISTEN, "--metrics-listen", METRICS,
         "--key-dedup-topics", "keyed-*", "--key-dedup-source", "key"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, "proxy.log"), "w"))
    try:
        for _ in range(100):
            if proxy.poll() is not None:
                sys.exit(f"the proxy exited: see {out_dir}/proxy.log")
            try:
                metric("kdp_upstream_up")
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the proxy's /metrics did not answer")
        for codec in CODECS:
            for mode in ("plain", "keyed"):
                harness("create-topic", "--bootstrap", bootstrap, "--topic", f"{mode}-{codec}",
                        "--partitions", "3")
        runs = {}
        modes = ["plain", "keyed"]
        for r in range(ROUNDS + 1):  # round 0 warms the JVM, the broker and the proxy up
            order = modes if r % 2 == 0 else modes[::-1]
            for codec in CODECS:
                for mode in order:
                    before = cpu_seconds(proxy.pid)
                    res = harness("produce", "--bootstrap", LISTEN, "--topic", f"{mode}-{codec}",
                                  "--count", str(RECORDS), "--size", "1024", "--acks", "all",
                                  "--idempotence", "false", "--key-prefix", f"r{r}-{mode}",
                                  "--linger-ms", "5", "--extra", f"compression.type={codec}",
                                  "--extra", "batch.size=65536")
                    cpu = cpu_seconds(proxy.pid) - before
                    assert res["acked"] == RECORDS and not res["errors"], res
                    gb = RECORDS * 1024 / 1e9
                    mbs = RECORDS * 1024 / 1e6 / (res["elapsed_ms"] / 1000)
                    print(f"round {r} {codec} {mode}: {mbs:.1f} MB/s, proxy CPU {cpu / gb:.2f} s/GB",
                          file=sys.stderr)
                    if r > 0:
                        runs.setdefault((codec, mode), []).append((mbs, cpu / gb))
        fresh = metric("kdp_key_dedup_records_total", 'outcome="fresh"')
        dups = metric("kdp_key_dedup_records_total", 'outcome="duplicate"')
        keys = metric("kdp_key_dedup_keys")
        hwm = status_kib(proxy.pid, "VmHWM")
    finally:
        proxy.terminate()
        proxy.wait(30)

    rows, summary = [], {}
    for codec in CODECS:
        med = {m: (statistics.median(x[0] for x in runs[(codec, m)]),
                   statistics.median(x[1] for x in runs[(codec, m)])) for m in ("plain", "keyed")}
        summary[codec] = {m: {"produce_mb_s": round(v[0], 1), "proxy_cpu_s_per_gb": round(v[1], 3)}
                          for m, v in med.items()}
        summary[codec]["keyed_over_plain"] = {
            "produce": round(med["keyed"][0] / med["plain"][0], 3),
            "cpu_per_gb": round(med["keyed"][1] / med["plain"][1], 3)}
        rows.append(f"| {codec} | {med['plain'][0]:.1f} | {med['keyed'][0]:.1f} | "
                    f"{100 * med['keyed'][0] / med['plain'][0]:.1f}% | {med['plain'][1]:.2f} | "
                    f"{med['keyed'][1]:.2f} | {med['keyed'][1] / med['plain'][1]:.2f}x |")
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
              "records_per_run": RECORDS, "record_bytes": 1024, "rounds": ROUNDS,
              "summary": summary, "key_records_fresh": fresh, "key_records_duplicate": dups,
              "keys_held_at_end": keys, "proxy_peak_rss_kib": hwm}
    json.dump(result, open(os.path.join(out_dir, "results.json"), "w"), indent=2)
    md = "\n".join([
        f"# Key dedup on vs off, {result['date']}",
        "",
        f"Commit {commit}. One proxy, 1-node Kafka, the Java client without idempotence: "
        f"{RECORDS} records of 1024 B with distinct keys per run, acks=all, linger.ms=5, "
        f"batch.size=65536, 3 partitions; medians of {ROUNDS} alternated rounds after a "
        "warm-up round. keyed: the topic matches --key-dedup-topics (source: record key), "
        "so every batch is decoded and every key claimed and committed; plain: it does not.",
        "",
        "| codec | plain MB/s | keyed MB/s | keyed/plain | plain CPU s/GB | keyed CPU s/GB | CPU ratio |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Keys claimed fresh: {fresh:.0f}; removed as duplicates: {dups:.0f}; keys held at the end: "
        f"{keys:.0f}; proxy peak RSS {hwm / 1024:.0f} MiB.",
        "",
    ])
    open(os.path.join(out_dir, "results.md"), "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
