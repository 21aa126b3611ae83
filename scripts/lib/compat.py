"""Runs the compatibility scenarios through the proxy and writes the matrix.

    python3 scripts/lib/compat.py --proxy B --proxy-log L --upstream U --kafka-version V \
        --clients-dir D --status-dir S --out docs/compatibility [--append] CLIENT...

Each client program (tests/compat/<client>/) takes `produce BOOTSTRAP TOPIC COUNT [START]`
(values v-START...), `consume BOOTSTRAP TOPIC COUNT TIMEOUT_S` (a consumer group that commits
what it read) and `cluster BOOTSTRAP`, and prints one JSON object.
The produce/consume cell is green only when the consumer read exactly the COUNT distinct
values the producer sent, each once; the cluster cell only when the client was told of
exactly the brokers the proxy serves (its log's "broker listener open" lines), at those
addresses and no other.
scripts/compat installs the clients; an install failure (S/<client>.install-error) is
reported in the cell instead of a result. --append keeps the rows already in the JSON file
that this run did not redo (other clients, scenarios, Kafka versions), so the matrix can
show 4.4 and 3.9 side by side.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

RECORDS = 1000
CONSUME_TIMEOUT_S = 60
STEP_TIMEOUT_S = 180
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIO = f"idempotent producer acks=all, {RECORDS} records, 3 partitions; consumer group from the beginning"
CLUSTER_SCENARIO = "admin: describe cluster lists every broker at its proxy address only"
RESUME_RECORDS = 100
RESUME_SCENARIO = (f"consumer group resumes from its committed offsets: {RESUME_RECORDS} more records, "
                   "the same group reads exactly those")


ORDER = ["confluent-kafka-python", "kafka-python", "franz-go", "sarama", "kafkajs", "java", "kcat"]


def client_commands(clients_dir):
    """argv prefix per client; the scenario's arguments follow."""
    compat = os.path.join(REPO, "tests", "compat")
    py = os.path.join(clients_dir, "venv", "bin", "python")
    return {
        "confluent-kafka-python": [py, os.path.join(compat, "python", "confluent_client.py")],
        "kafka-python": [py, os.path.join(compat, "python", "kafka_python_client.py")],
        "franz-go": [os.path.join(clients_dir, "bin", "franz-go")],
        "sarama": [os.path.join(clients_dir, "bin", "sarama")],
        # NODE_PATH: the modules stay in the cache, nothing is installed into the tree.
        "kafkajs": ["env", f"NODE_PATH={os.path.join(clients_dir, 'kafkajs', 'node_modules')}", "node",
                    os.path.join(compat, "kafkajs", "client.js")],
    }


def run_json(argv, env=None):
    """Runs a client step; returns (parsed stdout or None, stderr tail, seconds)."""
    start = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        return None, f"timed out after {STEP_TIMEOUT_S} s: {(e.stderr or '')[-400:]}", time.monotonic() - start
    took = time.monotonic() - start
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    try:
        out = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        out = None
    tail = p.stderr.strip()[-600:]
    if out is None:
        tail = f"exit {p.returncode}, no JSON on stdout: {tail or p.stdout.strip()[-400:]}"
    return out, tail, took


def java_steps(proxy, topic, kafka_version, start, count):
    harness = [os.path.join(REPO, "scripts", "kafka"), "run", "ClientHarness"]
    produce = harness + ["produce", "--bootstrap", proxy, "--topic", topic, "--count", str(count),
                         "--start", str(start), "--acks", "all", "--idempotence", "true",
                         "--client-id", "compat-java"]
    # With --group the harness commits synchronously at the end.
    consume = harness + ["consume", "--bootstrap", proxy, "--topic", topic, "--group", f"compat-java-{topic}",
                         "--from-beginning", "--timeout-ms", str(CONSUME_TIMEOUT_S * 1000),
                         "--client-id", "compat-java"]
    return produce, consume, f"kafka-clients {kafka_version}"


def kcat_version():
    p = subprocess.run(["kcat", "-V"], capture_output=True, text=True)
    m = re.search(r"Version (\S+) .*librdkafka (\S+)", p.stdout)
    return f"{m.group(1)} (librdkafka {m.group(2)})" if m else "unknown"


def run_kcat(proxy, topic, start, count):
    """kcat has no delivery count on its output: acked is the exit status of a producer
    that waits for every delivery report (-P exits non-zero on a failed delivery)."""
    data = "".join(f"v-{i}\n" for i in range(start, start + count))
    start = time.monotonic()
    p = subprocess.run(["kcat", "-P", "-b", proxy, "-t", topic, "-X", "enable.idempotence=true",
                        "-X", "acks=all", "-X", "client.id=compat-kcat"],
                       input=data, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    produced = {"acked": count if p.returncode == 0 else 0, "idempotence": True,
                "errors": [p.stderr.strip()[-600:]] if p.returncode else []}
    produce_s = time.monotonic() - start
    start = time.monotonic()
    # A balanced consumer (-G) commits what it read (librdkafka's auto commit, flushed on close).
    c = subprocess.run(["kcat", "-b", proxy, "-G", f"compat-kcat-{topic}", "-e", "-q",
                        "-X", "auto.offset.reset=earliest", "-X", "client.id=compat-kcat", topic],
                       capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    consumed = {"values": c.stdout.splitlines(), "errors": [c.stderr.strip()[-600:]] if c.returncode else []}
    return produced, consumed, produce_s, time.monotonic() - start, c.stderr.strip()[-600:]


def create_topic(upstream, topic):
    subprocess.run([os.path.join(REPO, "scripts", "kafka"), "run", "ClientHarness", "create-topic",
                    "--bootstrap", upstream, "--topic", topic, "--partitions", "3"],
                   check=True, capture_output=True, text=True)


def proxy_brokers(log_path):
    """The addresses the proxy opened for upstream brokers, read from its log."""
    with open(log_path) as f:
        return sorted(set(re.findall(r"broker listener open node_id=\d+ addr=(\S+)", f.read())))


def run_cluster(name, args, commands):
    row = {"client": name, "kafka_version": args.kafka_version, "scenario": CLUSTER_SCENARIO}
    if name == "java":
        argv = [os.path.join(REPO, "scripts", "kafka"), "run", "ClientHarness", "cluster",
                "--bootstrap", args.proxy, "--nodes-only"]
    elif name == "kcat":
        argv = ["kcat", "-L", "-J", "-b", args.proxy]
    else:
        argv = commands[name] + ["cluster", args.proxy]
    out, tail, took = run_json(argv)
    out = out or {}
    if name == "java":
        brokers = out.get("nodes", [])
    elif name == "kcat":
        brokers = [b["name"] for b in out.get("brokers", [])]
    else:
        brokers = out.get("brokers", [])
    expected = proxy_brokers(args.proxy_log)
    ok = bool(expected) and sorted(brokers) == expected
    row.update(result="pass" if ok else "FAIL", brokers=brokers, expected=expected,
               counts={"brokers": len(brokers), "at_proxy_address": len(set(brokers) & set(expected)),
                       "elsewhere": sorted(set(brokers) - set(expected))},
               seconds=round(took, 1), errors=(out.get("errors") or [])[:10])
    if not ok:
        row["stderr_tail"] = tail
    return row


def judge(produced, consumed, start, count):
    expected = {f"v-{i}" for i in range(start, start + count)}
    values = consumed.get("values") if consumed else None
    if values is None:  # the Java harness reports records, not bare values
        values = [r["v"] for r in (consumed or {}).get("records", [])]
    acked = (produced or {}).get("acked")
    got = set(values)
    counts = {"acked": acked, "consumed": len(values), "distinct": len(got),
              "missing": len(expected - got), "duplicates": len(values) - len(got),
              "unexpected": len(got - expected)}
    ok = acked == count and len(values) == count and got == expected
    return ok, counts


def run_client(name, args, commands, topic, scenario, start, count):
    row = {"client": name, "kafka_version": args.kafka_version, "scenario": scenario, "topic": topic}
    err_file = os.path.join(args.status_dir, f"{name}.install-error")
    if os.path.exists(err_file):
        with open(err_file) as f:
            row.update(result="not installable", detail=f.read().strip(), version="-")
        return row
    if start == 0:
        create_topic(args.upstream, topic)
    if name == "kcat":
        produced, consumed, produce_s, consume_s, tail = run_kcat(args.proxy, topic, start, count)
        version = kcat_version()
    else:
        if name == "java":
            produce_cmd, consume_cmd, version = java_steps(args.proxy, topic, args.kafka_version, start, count)
        else:
            base = commands[name]
            produce_cmd = base + ["produce", args.proxy, topic, str(count), str(start)]
            consume_cmd = base + ["consume", args.proxy, topic, str(count), str(CONSUME_TIMEOUT_S)]
            version = None
        produced, tail, produce_s = run_json(produce_cmd)
        consumed, ctail, consume_s = run_json(consume_cmd)
        tail = "\n".join(t for t in (tail, ctail) if t)
        version = version or (produced or consumed or {}).get("version", "unknown")
    ok, counts = judge(produced, consumed, start, count)
    errors = ((produced or {}).get("errors") or []) + ((consumed or {}).get("errors") or [])
    row.update(version=version, result="pass" if ok else "FAIL", counts=counts,
               idempotence=(produced or {}).get("idempotence"), produce_seconds=round(produce_s, 1),
               consume_seconds=round(consume_s, 1), seconds=round(produce_s + consume_s, 1),
               errors=errors[:10])
    if not ok:
        row["stderr_tail"] = tail
    return row


def cell(row):
    if row["result"] == "not installable":
        return f"not installable: {row['detail']}"
    c = row["counts"]
    if row["scenario"] == CLUSTER_SCENARIO:
        text = (f"{row['result']}: {c['brokers']} brokers listed, {c['at_proxy_address']} of "
                f"{len(row['expected'])} proxy addresses, other addresses: {', '.join(c['elsewhere']) or 'none'}")
    else:
        text = (f"{row['result']}: {c['acked']} acked, {c['consumed']} consumed, {c['distinct']} distinct, "
                f"{c['missing']} missing, {c['duplicates']} duplicated, {c['unexpected']} unexpected")
    if row["result"] != "pass" and row.get("errors"):
        text += f"; first error: {row['errors'][0]}"
    elif row["result"] != "pass" and row.get("stderr_tail"):
        text += f"; stderr ends: {row['stderr_tail'].splitlines()[-1]}"
    return text.replace("|", "\\|").replace("\n", " ").replace("\t", " ")


def write(rows, out, meta):
    order = [SCENARIO, CLUSTER_SCENARIO, RESUME_SCENARIO]
    rows = sorted(rows, key=lambda r: (r["kafka_version"], ORDER.index(r["client"]), order.index(r["scenario"])))
    with open(out + ".json", "w") as f:
        json.dump({"generated_by": "scripts/compat", **meta, "rows": rows}, f, indent=2)
        f.write("\n")
    lines = ["# Client compatibility", "",
             "Generated by `scripts/compat` (do not edit by hand): each client, installed from its own",
             "registry, runs each scenario through the proxy in front of a 3-node Apache Kafka (KRaft).",
             "Every result is an assertion on what the client saw:", "",
             f"- **produce/consume**: {SCENARIO}; passes only when the consumer read exactly the",
             "  values the producer sent, each once.",
             f"- **cluster**: {CLUSTER_SCENARIO} (the proxy's broker listeners, from its log).",
             f"- **group resume**: {RESUME_SCENARIO} (the consumers of the first scenario commit what they",
             "  read; nothing of it may come again).", "",
             "| client | version | Kafka | scenario | result | seconds | run at (UTC) |",
             "|---|---|---|---|---|---|---|"]
    short = {SCENARIO: "produce/consume", CLUSTER_SCENARIO: "cluster", RESUME_SCENARIO: "group resume"}
    for r in rows:
        lines.append(f"| {r['client']} | {r['version']} | {r['kafka_version']} | {short[r['scenario']]} | "
                     f"{cell(r)} | {r.get('seconds', '-')} | {r['run_at']} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--proxy", "--proxy-log", "--upstream", "--kafka-version", "--clients-dir", "--status-dir", "--out"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--append", action="store_true")
    ap.add_argument("clients", nargs="+")
    args = ap.parse_args()
    commands = client_commands(args.clients_dir)
    stamp = time.strftime("%Y%m%d%H%M%S")
    rows = []
    for name in args.clients:
        topic = f"compat-{name}-{stamp}"
        row = run_client(name, args, commands, topic, SCENARIO, 0, RECORDS)
        scenario_rows = [row]
        if row["result"] != "not installable":
            cluster = run_cluster(name, args, commands)
            cluster["version"] = row["version"]
            # The group of the first scenario committed what it read; it must read only what follows.
            resume = run_client(name, args, commands, topic, RESUME_SCENARIO, RECORDS, RESUME_RECORDS)
            scenario_rows += [cluster, resume]
        else:
            scenario_rows += [{**row, "scenario": sc} for sc in (CLUSTER_SCENARIO, RESUME_SCENARIO)]
        for r in scenario_rows:
            r["run_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
            print(f"{name} ({r['scenario'][:20]}...): {cell(r)}", flush=True)
        rows.extend(scenario_rows)
    kept = []
    if args.append and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            fresh = {(r["client"], r["kafka_version"], r["scenario"]) for r in rows}
            kept = [r for r in json.load(f)["rows"]
                    if (r["client"], r["kafka_version"], r["scenario"]) not in fresh]
    write(kept + rows, args.out, {"records_per_scenario": RECORDS})
    return 0 if all(r["result"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
