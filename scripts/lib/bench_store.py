#!/usr/bin/env python3
"""Produce throughput, added latency and store round trips with the shared
dedup store on vs off.

Run by scripts/bench-store, which starts a 1-node Kafka and Redis and builds
the proxy. Two proxy processes, identical but for --dedup-store: "off" (this
process's caches only) and "on" (Redis). Each round, alternating the order:

* batches: Kafka's ProducerPerformance (idempotent, acks=all, 1024 B
  records, as fast as it can) straight to Kafka, through "off" and through
  "on": records/s and the tool's p50/p99 latency; added latency is a
  proxy's p50/p99 less the direct run's.
* keys: the Java client (ClientHarness) without idempotence, distinct
  record keys, on a --key-dedup-topics topic through "off" and "on": MB/s
  (latency percentiles are not reported by that client).

From each proxy's /metrics at the end: Produce requests, and store calls by
op: load_windows and claim_keys are on the response path (round trips a
request waits for), save_batches are writes sent off that path.
Medians over ROUNDS rounds after a warm-up round.

    python3 scripts/lib/bench_store.py OUT_DIR PROXY_BIN KAFKA_BOOTSTRAP REDIS_URL
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS = int(os.environ.get("BENCH_STORE_RECORDS", "200000"))
ROUNDS = int(os.environ.get("BENCH_STORE_ROUNDS", "3"))
# Below the ephemeral port range (32768-60999 by default on Linux), so no
# client connection holds one of them.
PROXIES = {"off": ("127.0.0.1:29692", "127.0.0.1:29700"),
           "on": ("127.0.0.1:29792", "127.0.0.1:29800")}


def kafka_run(*args):
    return subprocess.run([os.path.join(REPO, "scripts/kafka"), "run", *args],
                          check=True, capture_output=True, text=True).stdout


def harness(*args):
    out = kafka_run("ClientHarness", *args)
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


PERF = re.compile(r"([\d.]+) records/sec .*?([\d.]+) ms avg latency.*?(\d+) ms 50th.*?(\d+) ms 99th")


def perf(bootstrap, topic):
    out = kafka_run("org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
                    "--num-records", str(RECORDS), "--record-size", "1024", "--throughput", "-1",
                    "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
                    "enable.idempotence=true", "linger.ms=5")
    m = PERF.search(out.strip().splitlines()[-1])
    if not m:
        sys.exit(f"ProducerPerformance said: {out[-500:]}")
    rps, _avg, p50, p99 = m.groups()
    return float(rps), float(p50), float(p99)


def metric(metrics_addr, name, label=""):
    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_proxy(proxy_bin, bootstrap, redis_url, mode, out_dir):
    listen, metrics_addr = PROXIES[mode]
    args = [proxy_bin, "--upstream", bootstrap, "--listen", listen, "--metrics-listen", metrics_addr,
            "--key-dedup-topics", "keyed-*", "--key-dedup-source", "key"]
    if mode == "on":
        args += ["--dedup-store", redis_url]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(out_dir, f"proxy-{mode}.log"), "w"))
    for _ in range(100):
        if p.poll() is not None:
            sys.exit(f"the {mode} proxy exited: see {out_dir}/proxy-{mode}.log")
        try:
            if urllib.request.urlopen(f"http://{metrics_addr}/readyz", timeout=2).status == 200:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"the {mode} proxy did not become ready")


def main():
    out_dir, proxy_bin, bootstrap, redis_url = sys.argv[1:5]
    os.makedirs(out_dir, exist_ok=True)
    procs = {}
    try:
        for m in PROXIES:
            procs[m] = start_proxy(proxy_bin, bootstrap, redis_url, m, out_dir)
        for t in ["perf-direct", "perf-off", "perf-on", "keyed-off", "keyed-on"]:
            harness("create-topic", "--bootstrap", bootstrap, "--topic", t, "--partitions", "3")
        batches, keys = {}, {}
        for r in range(ROUNDS + 1):  # round 0 warms everything up
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for mode in ["direct", *order]:
                target = bootstrap if mode == "direct" else PROXIES[mode][0]
                res = perf(target, f"perf-{mode}")
                print(f"round {r} batches {mode}: {res[0]:.0f} rec/s p50 {res[1]:.0f} ms "
                      f"p99 {res[2]:.0f} ms", file=sys.stderr)
                if r > 0:
                    batches.setdefault(mode, []).append(res)
            for mode in order:
                res = harness("produce", "--bootstrap", PROXIES[mode][0], "--topic", f"keyed-{mode}",
                              "--count", str(RECORDS), "--size", "1024", "--acks", "all",
                              "--idempotence", "false", "--key-prefix", f"r{r}-", "--linger-ms", "5")
                assert res["acked"] == RECORDS and not res["errors"], res
                mbs = RECORDS * 1024 / 1e6 / (res["elapsed_ms"] / 1000)
                print(f"round {r} keys {mode}: {mbs:.1f} MB/s", file=sys.stderr)
                if r > 0:
                    keys.setdefault(mode, []).append(mbs)
        calls = {}
        for mode in PROXIES:
            addr = PROXIES[mode][1]
            produce = metric(addr, "kdp_requests_total", 'api="produce"')
            ops = {op: metric(addr, "kdp_store_request_duration_seconds_count", f'op="{op}"')
                   for op in ("load_windows", "claim_keys", "save_batches")}
            calls[mode] = {"produce_requests": produce, **ops,
                           "waited_round_trips_per_request":
                               round((ops["load_windows"] + ops["claim_keys"]) / max(produce, 1), 4),
                           "writes_per_request": round(ops["save_batches"] / max(produce, 1), 4),
                           "store_errors": metric(addr, "kdp_store_errors_total")}
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(30)

    med = {m: tuple(statistics.median(x[i] for x in v) for i in range(3)) for m, v in batches.items()}
    kmed = {m: statistics.median(v) for m, v in keys.items()}
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
              "records_per_run": RECORDS, "rounds": ROUNDS,
              "batches": {m: {"records_s": round(v[0]), "p50_ms": v[1], "p99_ms": v[2],
                              "added_p50_ms": v[1] - med["direct"][1],
                              "added_p99_ms": v[2] - med["direct"][2]} for m, v in med.items()},
              "keys_mb_s": {m: round(v, 1) for m, v in kmed.items()},
              "store_calls": calls}
    json.dump(result, open(os.path.join(out_dir, "results.json"), "w"), indent=2)
    rows = [f"| {m} | {v[0]:.0f} | {v[1]:.0f} | {v[2]:.0f} | "
            f"{v[1] - med['direct'][1]:+.0f} | {v[2] - med['direct'][2]:+.0f} |"
            for m, v in med.items()]
    crow = [f"| {m} | {c['produce_requests']:.0f} | {c['load_windows']:.0f} | {c['claim_keys']:.0f} | "
            f"{c['waited_round_trips_per_request']} | {c['save_batches']:.0f} | {c['store_errors']:.0f} |"
            for m, c in calls.items()]
    md = "\n".join([
        f"# Shared dedup store on vs off, {result['date']}",
        "",
        f"Commit {commit}. 1-node Kafka, {RECORDS} records of 1024 B per run, medians of "
        f"{ROUNDS} rounds after a warm-up. Batches: ProducerPerformance (idempotent, acks=all).",
        "",
        "| path | records/s | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Keys (Java client, distinct keys, no idempotence): off {kmed['off']:.1f} MB/s, "
        f"on {kmed['on']:.1f} MB/s.",
        "",
        "| proxy | Produce requests | load_windows | claim_keys | waited round trips / request "
        "| save_batches (off-path) | store errors |",
        "|---|---|---|---|---|---|---|",
        *crow,
        "",
    ])
    open(os.path.join(out_dir, "results.md"), "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
