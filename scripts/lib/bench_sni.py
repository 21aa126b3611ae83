#!/usr/bin/env python3
"""TLS produce throughput and proxy CPU per GB: SNI routing vs per-port mode.

Run by scripts/bench-sni, which starts a 1-node Kafka and builds the proxy.
Two proxy processes in front of the same broker, both terminating TLS with
the same certificate (a CA made here with openssl; the leaf covers
*.kafka.bench and IP 127.0.0.1) and with dedup on as by default:

  per-port  the client bootstraps at 127.0.0.1:<base+10>; Metadata names
            the broker at 127.0.0.1:<its own port>, a second TLS listener
  sni       the client bootstraps at bootstrap.kafka.bench:<base+20>;
            Metadata names broker-1.kafka.bench:<base+20>, the same port,
            routed by the SNI of each ClientHello (--sni-routing)

The Java client (ClientHarness) sends RECORDS records of 1024 B,
idempotent, acks=all, linger.ms=5, batch.size=65536, 3 partitions, over TLS
(PEM truststore), with the names resolved by -Djdk.net.hosts.file in both
modes (per-port never asks for one). ROUNDS alternated rounds after a
warm-up round; medians. CPU is each proxy process's utime+stime from /proc.
Each run is checked: every record acknowledged, and the run's connections
went where the mode says (sni: none to a per-broker listener; per-port:
some).

    python3 scripts/lib/bench_sni.py OUT_DIR PROXY_BIN KAFKA_BOOTSTRAP
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
RECORDS = int(os.environ.get("BENCH_SNI_RECORDS", "200000"))
ROUNDS = int(os.environ.get("BENCH_SNI_ROUNDS", "3"))
BASE = int(os.environ.get("BENCH_SNI_PORT_BASE", "40092"))
DOMAIN = "kafka.bench"
PATTERN = "broker-$(nodeId)." + DOMAIN
BOOTSTRAP_NAME = "bootstrap." + DOMAIN
MODES = ["per-port", "sni"]
# listen port, metrics port and client bootstrap of each mode
PORTS = {"per-port": BASE + 10, "sni": BASE + 20}


def metrics_addr(mode):
    return f"127.0.0.1:{PORTS[mode] + 5}"


def client_bootstrap(mode):
    host = BOOTSTRAP_NAME if mode == "sni" else "127.0.0.1"
    return f"{host}:{PORTS[mode]}"


def harness(*args, java_opts=""):
    env = dict(os.environ)
    env["KDP_JAVA_OPTS"] = (env.get("KDP_JAVA_OPTS", "") + " " + java_opts).strip()
    p = subprocess.run([os.path.join(REPO, "scripts/kafka"), "run", "ClientHarness", *args],
                       capture_output=True, text=True, env=env)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        sys.exit(f"ClientHarness {args[0]} failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return json.loads(lines[-1])


def metric(mode, name, label=""):
    url = f"http://{metrics_addr(mode)}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(tls_dir):
    """A CA and one leaf for both proxies: *.kafka.bench and IP 127.0.0.1."""
    os.makedirs(tls_dir, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
            "-subj", "/CN=kdp-bench-sni-ca", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tls_dir)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=kdp-bench-sni",
            "-keyout", "proxy.key", "-out", "proxy.csr", cwd=tls_dir)
    with open(os.path.join(tls_dir, "proxy.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:*.{DOMAIN},IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-sha256", "-days", "30", "-in", "proxy.csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "proxy.ext", "-out", "proxy.pem",
            cwd=tls_dir)
    hosts = os.path.join(tls_dir, "hosts")
    names = " ".join(f"broker-{i}.{DOMAIN}" for i in range(10))
    with open(hosts, "w") as f:
        f.write(f"127.0.0.1 localhost {BOOTSTRAP_NAME} {names}\n")
    return (os.path.join(tls_dir, "ca.pem"), os.path.join(tls_dir, "proxy.pem"),
            os.path.join(tls_dir, "proxy.key"), hosts)


def start_proxy(mode, proxy_bin, bootstrap, cert, key, out_dir):
    args = [proxy_bin, "--upstream", bootstrap, "--listen", f"127.0.0.1:{PORTS[mode]}",
            "--broker-port-base", str(PORTS[mode] + 1), "--metrics-listen", metrics_addr(mode),
            "--advertised-host", "127.0.0.1", "--tls-cert", cert, "--tls-key", key]
    if mode == "sni":
        args += ["--sni-routing", PATTERN, "--sni-bootstrap", BOOTSTRAP_NAME]
    proxy = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(out_dir, f"proxy-{mode}.log"), "w"))
    for _ in range(100):
        if proxy.poll() is not None:
            sys.exit(f"the {mode} proxy exited: see {out_dir}/proxy-{mode}.log")
        try:
            metric(mode, "kdp_upstream_up")
            return proxy
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the {mode} proxy's /metrics did not answer")


def main():
    out_dir, proxy_bin, bootstrap = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    # recorded, not judged: figures from a busy machine are not comparable
    load_at_start = os.getloadavg()[0]
    ca, cert, key, hosts = certificates(os.path.join(out_dir, "tls"))
    java_opts = f"-Djdk.net.hosts.file={hosts}"
    tls = ["--extra", "security.protocol=SSL", "--extra", "ssl.truststore.type=PEM",
           "--extra", f"ssl.truststore.location={ca}"]
    proxies = {}
    try:
        for mode in MODES:
            proxies[mode] = start_proxy(mode, proxy_bin, bootstrap, cert, key, out_dir)
        runs = {}
        for r in range(ROUNDS + 1):  # round 0 warms the JVM, the broker and the proxies up
            order = MODES if r % 2 == 0 else MODES[::-1]
            for mode in order:
                topic = f"sni-bench-{mode}-{r}"
                harness("create-topic", "--bootstrap", bootstrap, "--topic", topic,
                        "--partitions", "3")
                pid = proxies[mode].pid
                conns = {kind: metric(mode, "kdp_connections_total", f'listener="{kind}"')
                         for kind in ("bootstrap", "broker")}
                before = cpu_seconds(pid)
                res = harness("produce", "--bootstrap", client_bootstrap(mode), "--topic", topic,
                              "--count", str(RECORDS), "--size", "1024", "--acks", "all",
                              "--idempotence", "true", "--linger-ms", "5",
                              "--extra", "batch.size=65536", *tls, java_opts=java_opts)
                cpu = cpu_seconds(pid) - before
                assert res["acked"] == RECORDS and not res["errors"], res
                via = {kind: metric(mode, "kdp_connections_total", f'listener="{kind}"')
                       - conns[kind] for kind in conns}
                if mode == "sni":
                    assert via["broker"] == 0 and via["bootstrap"] >= 2, via
                else:
                    assert via["broker"] >= 1, via
                gb = RECORDS * 1024 / 1e9
                mbs = RECORDS * 1024 / 1e6 / (res["elapsed_ms"] / 1000)
                print(f"round {r} {mode}: {mbs:.1f} MB/s, proxy CPU {cpu / gb:.2f} s/GB, "
                      f"connections {via}", file=sys.stderr)
                if r > 0:
                    runs.setdefault(mode, []).append({"produce_mb_s": round(mbs, 2),
                                                      "proxy_cpu_s_per_gb": round(cpu / gb, 3),
                                                      "connections": via})
        hwm = {mode: status_kib(p.pid, "VmHWM") for mode, p in proxies.items()}
        refused = {mode: metric(mode, "kdp_frame_errors_total", 'kind="sni"') for mode in MODES}
    finally:
        for p in proxies.values():
            p.terminate()
            p.wait(30)

    med = {m: (statistics.median(x["produce_mb_s"] for x in runs[m]),
               statistics.median(x["proxy_cpu_s_per_gb"] for x in runs[m])) for m in MODES}
    summary = {m: {"produce_mb_s": round(v[0], 1), "proxy_cpu_s_per_gb": round(v[1], 3),
                   "proxy_peak_rss_kib": hwm[m]} for m, v in med.items()}
    summary["sni_over_per_port"] = {
        "produce": round(med["sni"][0] / med["per-port"][0], 3),
        "cpu_per_gb": round(med["sni"][1] / med["per-port"][1], 3)}
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
              "records_per_run": RECORDS, "record_bytes": 1024, "rounds": ROUNDS,
              "summary": summary, "runs": runs, "sni_refusals": refused,
              "load_average_1m": {"start": round(load_at_start, 2),
                                  "end": round(os.getloadavg()[0], 2)},
              "cpus": os.cpu_count()}
    json.dump(result, open(os.path.join(out_dir, "results.json"), "w"), indent=2)
    rows = [f"| {m} | {med[m][0]:.1f} | {med[m][1]:.2f} | {hwm[m] / 1024:.0f} |" for m in MODES]
    md = "\n".join([
        f"# TLS produce, SNI routing vs per-port, {result['date']}",
        "",
        f"Commit {commit}. Two proxies (TLS termination, dedup on) in front of one 1-node Kafka; "
        f"the Java client over TLS: {RECORDS} records of 1024 B per run, idempotent, acks=all, "
        f"linger.ms=5, batch.size=65536, 3 partitions; medians of {ROUNDS} alternated rounds "
        "after a warm-up round. per-port: one TLS port per broker, advertised as 127.0.0.1; "
        "sni: every broker on the bootstrap port, routed by the ClientHello's SNI.",
        "",
        "| mode | produce MB/s | proxy CPU s/GB | proxy peak RSS MiB |",
        "|---|---|---|---|",
        *rows,
        "",
        f"sni / per-port: produce {100 * med['sni'][0] / med['per-port'][0]:.1f}%, "
        f"CPU per GB {med['sni'][1] / med['per-port'][1]:.2f}x. "
        f"SNI refusals during the run: {refused['sni']:.0f}. Load average (1 min) "
        f"{result['load_average_1m']['start']} at the start, "
        f"{result['load_average_1m']['end']} at the end, {os.cpu_count()} CPUs.",
        "",
    ])
    open(os.path.join(out_dir, "results.md"), "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
