"""Runs the compatibility scenarios through the proxy and writes the matrix.

    python3 scripts/lib/compat.py --proxy B --proxy-log L --metrics URL --upstream U
        --kafka-version V --clients-dir D --status-dir S --out docs/compatibility
        [--tls-proxy B --tls-proxy-log L --tls-ca CA --sasl MECH:USER:PASSWORD]
        [--scenarios a,b,...] [--append] CLIENT...

Each client program (tests/compat/<client>/) takes `produce BOOTSTRAP TOPIC COUNT [START]`
(values v-START...), `consume BOOTSTRAP TOPIC COUNT TIMEOUT_S` (a consumer group that commits
what it read) and `cluster BOOTSTRAP`, and prints one JSON object. A scenario's client
settings reach it as environment variables, the same for every client:

    KDP_COMPAT_SASL=MECH:USER:PASSWORD  SASL over TLS, trusting the CA in KDP_COMPAT_CA
    KDP_COMPAT_REQUEST_TIMEOUT_MS=MS     a short request timeout, retries on
    KDP_COMPAT_RATE=R                    R records per second (spreads the produce over time)
    KDP_COMPAT_TXN_ID=ID                 one transaction; KDP_COMPAT_TXN_ABORT=1 aborts it
    KDP_COMPAT_READ_COMMITTED=1          the consumer reads read_committed

The Java client harness gets the same as options (java_produce/java_consume), kcat as
librdkafka properties (run_kcat).

Every cell is an assertion on what was consumed: the consumer read exactly the values the
producer sent (committed, for transactions), each once; the fault scenarios also assert
that the fault happened while the producer ran, and the retry scenario that the proxy's
/metrics counted a batch answered by the proxy during that run. A client that cannot do a
scenario gets an `unsupported` cell with the reason (UNSUPPORTED), never a silent gap.
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
import signal
import subprocess
import sys
import threading
import time
import urllib.request

RECORDS = 1000
CONSUME_TIMEOUT_S = 60
STEP_TIMEOUT_S = 180
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA = os.path.join(REPO, "scripts", "kafka")
RESUME_RECORDS = 100
TXN_RECORDS = 200
FAULT_RATE = 250  # records per second while a broker is killed or paused
REQUEST_TIMEOUT_MS = 2000  # the retry scenario's request timeout
PAUSE_S = 5.0  # SIGSTOP of the leader: two request timeouts, well inside the 9 s broker session

# id -> (short name, description). The JSON rows carry the description as "scenario".
SCENARIOS = {
    "produce": ("produce/consume", (f"idempotent producer acks=all, {RECORDS} records, 3 partitions; "
                "consumer group from the beginning")),
    "cluster": ("cluster", "admin: describe cluster lists every broker at its proxy address only"),
    "resume": ("group resume", (f"consumer group resumes from its committed offsets: {RESUME_RECORDS} more "
               "records, the same group reads exactly those")),
    "txn": ("transactions", (f"transactional producer: {TXN_RECORDS} records in a transaction it aborts, then "
            f"{TXN_RECORDS} in one it commits (same transactional id); a read_committed group reads exactly "
            "the committed ones")),
    "leader-kill": ("leader kill", (f"idempotent producer acks=all, {RECORDS} records at {FAULT_RATE}/s; the "
                    "leader of partition 0 is SIGKILLed mid-produce and restarted once the producer is done; "
                    "every record acked, then consumed exactly once")),
    "retry": ("retry answered by proxy", (f"idempotent producer, request timeout {REQUEST_TIMEOUT_MS} ms with "
              f"retries, {RECORDS} records at {FAULT_RATE}/s; the leader of partition 0 is SIGSTOPped for "
              f"{PAUSE_S:g} s mid-produce; the proxy's /metrics must count a batch it answered (duplicate or "
              "coalesced) during the run, and every record is consumed exactly once")),
    "tls-scram": ("TLS + SCRAM", (f"the produce/consume scenario ({RECORDS} records) with the client on TLS + "
                  "SASL SCRAM-SHA-512 to the proxy and the proxy on TLS to the brokers' SASL_SSL listeners")),
}
ORDER = ["confluent-kafka-python", "kafka-python", "franz-go", "sarama", "kafkajs", "java", "kcat"]

# (client, scenario) -> why the client cannot do it.
KCAT_NO_PACING = (
    "kcat cannot spread a produce over time: it takes stdin in 1,024-byte blocks, so records fed "
    "slowly reach librdkafka a block at a time (seen: a kcat killed with 200 records fed and its input "
    "still open had sent exactly v-0..v-188, the first 1,024 bytes; 1,000 records fed at 250/s went out "
    "as 3 batches at the end of the input), and a broker fault then meets an idle producer")
UNSUPPORTED = {
    ("kcat", "leader-kill"): KCAT_NO_PACING,
    ("kcat", "retry"): KCAT_NO_PACING,
    # Measured with this script's control runs (--direct / KDP_COMPAT_DIRECT=1: the same
    # scenario straight to the brokers, no proxy), 2026-11-29.
    ("kafkajs", "leader-kill"): (
        "KafkaJS 2.2.4 loses acknowledged records when the partition leader dies, without the proxy "
        "too: control runs straight to the brokers lost 4 of 1,000 acked records (Kafka 4.4.0, twice) "
        "and had 6 missing and 3 duplicated (3.9.2); one control run of four was clean. Through the "
        "proxy: 3 or 4 acked records missing in four runs on 4.4.0"),
    ("kafkajs", "retry"): (
        "KafkaJS 2.2.4's retries of a request that timed out are refused by the broker with "
        "OUT_OF_ORDER_SEQUENCE_NUMBER, without the proxy too (control runs straight to the brokers: "
        "20 of 1,000 records never acked on Kafka 4.4.0, twice; one clean control run on 3.9.2); "
        "through the proxy no batch was answered by it in four runs"),
}

# (client, scenario) -> a client behaviour that makes the scenario's own check fail while
# every record still arrives exactly once. Applied only to a cell that fails that way (the
# consumption judged clean); the cell then says `unsupported` with this reason and what was
# measured, and turns green by itself should the client change.
KNOWN_LIMITS = {
    ("sarama", "retry"): (
        "Sarama puts the messages of a request that timed out back through its partition producer "
        "(async_producer.go retryMessages) and builds a new batch for them: the same batch only when "
        "nothing else was buffered for that partition meanwhile (then the proxy answers it: green runs "
        "show it); a different batch is forwarded (the proxy answers only a byte-identical retry, same "
        "CRC) and the broker matches it by sequence"),
}

ANSWERED = ("duplicate", "coalesced")


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


def parse_json(stdout, stderr, returncode):
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        out = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        out = None
    tail = stderr.strip()[-600:]
    if out is None:
        tail = f"exit {returncode}, no JSON on stdout: {tail or stdout.strip()[-400:]}"
    return out, tail


def run_json(argv, env=None):
    """Runs a client step; returns (parsed stdout or None, stderr tail, seconds)."""
    start = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        return None, f"timed out after {STEP_TIMEOUT_S} s: {(e.stderr or '')[-400:]}", time.monotonic() - start
    out, tail = parse_json(p.stdout, p.stderr, p.returncode)
    return out, tail, time.monotonic() - start


class Step:
    """A client step started in the background (the fault scenarios act while it runs)."""

    def __init__(self, argv, env=None, stdin_lines=None, hold_stdin=False):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.PIPE if stdin_lines is not None else subprocess.DEVNULL)
        self.feeder = None
        if stdin_lines is not None:
            self.feeder = threading.Thread(target=self._feed, args=(stdin_lines, hold_stdin),
                                           daemon=True)
            self.feeder.start()

    def _feed(self, lines, hold):
        try:
            for line in lines:
                self.proc.stdin.write(line)
            self.proc.stdin.flush()
            if not hold:  # the end of the input: kcat flushes (and commits) and exits
                self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def running(self):
        return self.proc.poll() is None

    def finish(self):
        if self.feeder is not None:
            # All input written (communicate() would close stdin under the feeder), unless the
            # input is held open for a kill.
            self.feeder.join(timeout=None if self.running() else 0)
            if not self.feeder.is_alive():
                self.proc.stdin = None
        try:
            stdout, stderr = self.proc.communicate(timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
        return stdout, stderr, self.proc.returncode, time.monotonic() - self.start


class Ctx:
    """Where the clients connect: the proxies, or (direct, the control run) the brokers."""

    def __init__(self, args, direct=False):
        self.args = args
        self.direct = direct
        self.commands = client_commands(args.clients_dir)
        self.proxy = args.upstream if direct else args.proxy
        self.tls_bootstrap = args.sasl_upstream if direct else args.tls_proxy
        self.tls_ca = args.broker_ca if direct else args.tls_ca

    def bootstrap(self, settings):
        return self.tls_bootstrap if settings.get("sasl") else self.proxy

    def metrics(self):
        """kdp_produce_batches_total by outcome, from the proxy's /metrics ({} in a --direct run)."""
        if self.direct:
            return {}
        with urllib.request.urlopen(self.args.metrics, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for m in re.finditer(r'^kdp_produce_batches_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', text, re.MULTILINE):
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
        return out


# ---------------------------------------------------------------------------
# client steps: (argv, env) for produce and consume, per client kind
# ---------------------------------------------------------------------------

def client_env(settings):
    env = dict(os.environ)
    for k, v in settings.items():
        env["KDP_COMPAT_" + k.upper()] = str(v)
    return env


def java_security(settings):
    if not settings.get("sasl"):
        return []
    mechanism, user, password = settings["sasl"].split(":", 2)
    extra = ["security.protocol=SASL_SSL", f"sasl.mechanism={mechanism}",
             ("sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
             f'username="{user}" password="{password}";'),
             "ssl.truststore.type=PEM", f"ssl.truststore.location={settings['ca']}"]
    return [a for kv in extra for a in ("--extra", kv)]


def java_produce(bootstrap, topic, start, count, settings):
    argv = [KAFKA, "run", "ClientHarness", "produce", "--bootstrap", bootstrap, "--topic", topic,
            "--count", str(count), "--start", str(start), "--acks", "all", "--idempotence", "true",
            "--client-id", "compat-java"] + java_security(settings)
    if settings.get("rate"):
        argv += ["--rate", str(settings["rate"])]
    if settings.get("txn_id"):
        argv += ["--transactional-id", settings["txn_id"]] + (["--abort"] if settings.get("txn_abort") else [])
    if settings.get("request_timeout_ms"):
        argv += ["--extra", f"request.timeout.ms={settings['request_timeout_ms']}",
                 "--extra", "delivery.timeout.ms=120000", "--extra", "retry.backoff.ms=100"]
    return argv


def java_consume(bootstrap, topic, settings):
    # With --group the harness commits synchronously at the end.
    return [KAFKA, "run", "ClientHarness", "consume", "--bootstrap", bootstrap, "--topic", topic,
            "--group", f"compat-java-{topic}", "--from-beginning", "--timeout-ms", str(CONSUME_TIMEOUT_S * 1000),
            "--isolation", "read_committed" if settings.get("read_committed") else "read_uncommitted",
            "--client-id", "compat-java"] + java_security(settings)


def kcat_props(settings, producer):
    props = ["client.id=compat-kcat"]
    if settings.get("sasl"):
        mechanism, user, password = settings["sasl"].split(":", 2)
        props += ["security.protocol=SASL_SSL", f"sasl.mechanism={mechanism}", f"sasl.username={user}",
                  f"sasl.password={password}", f"ssl.ca.location={settings['ca']}"]
    if producer:
        props += ["enable.idempotence=true", "acks=all"]
        if settings.get("request_timeout_ms"):
            t = int(settings["request_timeout_ms"])
            props += [f"request.timeout.ms={t}", f"socket.timeout.ms={t + 500}", "message.timeout.ms=120000",
                      "retry.backoff.ms=100"]
        if settings.get("txn_id"):
            props.append(f"transactional.id={settings['txn_id']}")
    else:
        props += ["auto.offset.reset=earliest",
                  "isolation.level=" + ("read_committed" if settings.get("read_committed") else "read_uncommitted")]
    return [a for kv in props for a in ("-X", kv)]


def kcat_version():
    p = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False)
    m = re.search(r"Version (\S+) .*librdkafka (\S+)", p.stdout)
    return f"{m.group(1)} (librdkafka {m.group(2)})" if m else "unknown"


def start_produce(ctx, name, topic, start, count, settings):
    bootstrap = ctx.bootstrap(settings)
    if name == "kcat":
        # kcat has no delivery count on its output: acked is the exit status of a producer
        # that waits for every delivery report (-P exits non-zero on a failed delivery); it
        # runs a transaction over its whole input when transactional.id is set.
        lines = [f"v-{i}\n" for i in range(start, start + count)]
        return Step(["kcat", "-P", "-b", bootstrap, "-t", topic] + kcat_props(settings, True),
                    stdin_lines=lines, hold_stdin=settings.get("hold_stdin", False))
    if name == "java":
        return Step(java_produce(bootstrap, topic, start, count, settings))
    return Step(ctx.commands[name] + ["produce", bootstrap, topic, str(count), str(start)], env=client_env(settings))


def finish_produce(name, step, count):
    stdout, stderr, rc, took = step.finish()
    if name == "kcat":
        out = {"acked": count if rc == 0 else 0, "idempotence": True,
               "errors": [stderr.strip()[-600:]] if rc else []}
        if "Transaction successfully committed" in stderr:
            out["transaction"] = "committed"
        return out, stderr.strip()[-600:], took
    out, tail = parse_json(stdout, stderr, rc)
    return out, tail, took


def produce(ctx, name, topic, start, count, settings):
    return finish_produce(name, start_produce(ctx, name, topic, start, count, settings), count)


def consume(ctx, name, topic, count, settings):
    bootstrap = ctx.bootstrap(settings)
    if name == "kcat":
        t0 = time.monotonic()
        # A balanced consumer (-G) commits what it read (librdkafka's auto commit, flushed on close).
        c = subprocess.run(["kcat", "-b", bootstrap, "-G", f"compat-kcat-{topic}", "-e", "-q"]
                           + kcat_props(settings, False) + [topic],
                           capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
        out = {"values": c.stdout.splitlines(), "errors": [c.stderr.strip()[-600:]] if c.returncode else []}
        return out, c.stderr.strip()[-600:], time.monotonic() - t0
    if name == "java":
        return run_json(java_consume(bootstrap, topic, settings))
    return run_json(ctx.commands[name] + ["consume", bootstrap, topic, str(count), str(CONSUME_TIMEOUT_S)],
                    env=client_env(settings))


# ---------------------------------------------------------------------------
# the cluster: topics, leaders, broker faults
# ---------------------------------------------------------------------------

def create_topic(upstream, topic):
    subprocess.run([KAFKA, "run", "ClientHarness", "create-topic", "--bootstrap", upstream, "--topic", topic,
                    "--partitions", "3"], check=True, capture_output=True, text=True)


def leader_of(upstream, topic, partition=0):
    p = subprocess.run([KAFKA, "run", "ClientHarness", "topic-leader", "--bootstrap", upstream, "--topic", topic,
                        "--partition", str(partition), "--wait-ms", "30000"], capture_output=True, text=True, check=False)
    return json.loads(p.stdout.strip().splitlines()[-1])["leader"]


def node_pid(node):
    return int(subprocess.run([KAFKA, "pid", str(node)], capture_output=True, text=True, check=True).stdout.strip())


def proc_state(pid):
    """The state letter of /proc/PID/stat (T: stopped), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until(pred, within_s, every_s=0.05):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return pred()


def wait_producing(ctx, step, forwarded0, batches=20, within_s=150):
    """Waits until the proxy forwarded `batches` more Produce batches while the step runs
    (a --direct run has no proxy to ask: 2 s after the start)."""
    if ctx.direct:
        time.sleep(2)
        return step.running()
    return wait_until(lambda: not step.running()
                      or ctx.metrics().get("forwarded", 0) - forwarded0 >= batches, within_s, 0.05) \
        and step.running()


# ---------------------------------------------------------------------------
# judging and the scenarios
# ---------------------------------------------------------------------------

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


def base_row(ctx, name, scenario):
    row = {"client": name, "kafka_version": ctx.args.kafka_version, "scenario_id": scenario,
           "scenario": SCENARIOS[scenario][1]}
    if ctx.direct:
        row["direct"] = True  # a control run: no proxy, nothing it answered
    return row


def produce_consume(ctx, name, scenario, topic, start, count, settings=None, new_topic=True):
    settings = settings or {}
    row = base_row(ctx, name, scenario)
    row["topic"] = topic
    if new_topic:
        create_topic(ctx.args.upstream, topic)
    produced, tail, produce_s = produce(ctx, name, topic, start, count, settings)
    consumed, ctail, consume_s = consume(ctx, name, topic, count, settings)
    return finish_row(row, produced, consumed, start, count, [tail, ctail], produce_s, consume_s)


def finish_row(row, produced, consumed, start, count, tails, produce_s, consume_s, checks=()):
    ok, counts = judge(produced, consumed, start, count)
    failed = [text for good, text in checks if not good]
    errors = failed + ((produced or {}).get("errors") or []) + ((consumed or {}).get("errors") or [])
    row.update(result="pass" if ok and not failed else "FAIL", counts=counts,
               idempotence=(produced or {}).get("idempotence"), produce_seconds=round(produce_s, 1),
               consume_seconds=round(consume_s, 1), seconds=round(produce_s + consume_s, 1), errors=errors[:10])
    row["_version"] = (produced or consumed or {}).get("version")
    if row["result"] != "pass":
        row["stderr_tail"] = "\n".join(t for t in tails if t)
    return row


def scenario_cluster(ctx, name):
    row = base_row(ctx, name, "cluster")
    if name == "java":
        argv = [KAFKA, "run", "ClientHarness", "cluster", "--bootstrap", ctx.proxy, "--nodes-only"]
    elif name == "kcat":
        argv = ["kcat", "-L", "-J", "-b", ctx.proxy]
    else:
        argv = ctx.commands[name] + ["cluster", ctx.proxy]
    out, tail, took = run_json(argv)
    out = out or {}
    if name == "java":
        brokers = out.get("nodes", [])
    elif name == "kcat":
        brokers = [b["name"] for b in out.get("brokers", [])]
    else:
        brokers = out.get("brokers", [])
    expected = proxy_brokers(ctx.args.proxy_log)
    ok = bool(expected) and sorted(brokers) == expected
    row.update(result="pass" if ok else "FAIL", brokers=brokers, expected=expected,
               counts={"brokers": len(brokers), "at_proxy_address": len(set(brokers) & set(expected)),
                       "elsewhere": sorted(set(brokers) - set(expected))},
               seconds=round(took, 1), errors=(out.get("errors") or [])[:10])
    if not ok:
        row["stderr_tail"] = tail
    return row


def proxy_brokers(log_path):
    """The addresses the proxy opened for upstream brokers, read from its log."""
    with open(log_path) as f:
        return sorted(set(re.findall(r"broker listener open node_id=\d+ addr=(\S+)", f.read())))


def scenario_txn(ctx, name, topic):
    row = base_row(ctx, name, "txn")
    row["topic"] = topic
    create_topic(ctx.args.upstream, topic)
    txn = {"txn_id": f"compat-txn-{topic}"}
    checks = []
    if name == "kcat":
        # kcat commits at the end of its input and has no way to abort: the aborted
        # transaction is one whose kcat is killed after its records were sent; the next
        # producer with the same transactional id fences it and the coordinator aborts it.
        forwarded0 = ctx.metrics().get("forwarded", 0)
        step = start_produce(ctx, name, topic, 0, TXN_RECORDS, {**txn, "hold_stdin": True})
        sent = wait_until(lambda: ctx.metrics().get("forwarded", 0) > forwarded0, 120)
        time.sleep(0.5)
        still = step.running()
        step.proc.kill()
        _, stderr, _, abort_s = step.finish()
        checks.append((sent and still and "successfully committed" not in stderr,
                       "the first kcat was killed inside its transaction, after its batches were sent"))
        # What the killed transaction wrote, as a read_uncommitted reader sees it (after the
        # abort, below): the aborted records really were in the log.
        aborted = {"acked": None, "transaction": "killed"}
    else:
        aborted, tail, abort_s = produce(ctx, name, topic, 0, TXN_RECORDS, {**txn, "txn_abort": 1})
        checks.append(((aborted or {}).get("transaction") == "aborted" and (aborted or {}).get("acked") == TXN_RECORDS,
                       f"first transaction: {TXN_RECORDS} records acked, then aborted ({_brief(aborted)})"))
    committed, tail, commit_s = produce(ctx, name, topic, TXN_RECORDS, TXN_RECORDS, txn)
    checks.append(((committed or {}).get("transaction") == "committed",
                   f"second transaction committed ({_brief(committed)})"))
    consumed, ctail, consume_s = consume(ctx, name, topic, TXN_RECORDS, {"read_committed": 1})
    if name == "kcat":
        seen = subprocess.run(["kcat", "-b", ctx.proxy, "-C", "-e", "-q", "-t", topic,
                               "-X", "isolation.level=read_uncommitted"],
                              capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False).stdout.split()
        aborted["acked"] = len({v for v in seen if int(v[2:]) < TXN_RECORDS})
        checks.append((aborted["acked"] > 0, (f"the killed transaction wrote {aborted['acked']} records "
                                             "(read_uncommitted)")))
    row = finish_row(row, committed, consumed, TXN_RECORDS, TXN_RECORDS, [tail, ctail], abort_s + commit_s,
                     consume_s, checks)
    row["counts"]["aborted_acked"] = (aborted or {}).get("acked")
    row["counts"]["isolation"] = (consumed or {}).get("isolation", "read_committed")
    return row


def _brief(out):
    out = out or {}
    return f"acked {out.get('acked')}, transaction {out.get('transaction')}, errors {(out.get('errors') or [])[:1]}"


def scenario_leader_kill(ctx, name, topic):
    row = base_row(ctx, name, "leader-kill")
    row["topic"] = topic
    create_topic(ctx.args.upstream, topic)
    leader = leader_of(ctx.args.upstream, topic)
    before = ctx.metrics()
    step = start_produce(ctx, name, topic, 0, RECORDS, {"rate": FAULT_RATE})
    try:
        producing = wait_producing(ctx, step, before.get("forwarded", 0))
        pid = node_pid(leader)
        os.kill(pid, signal.SIGKILL)
        gone = wait_until(lambda: proc_state(pid) is None, 10)
        killed_at = round(time.monotonic() - step.start, 1)
        produced, tail, produce_s = finish_produce(name, step, RECORDS)
        after = ctx.metrics()
    finally:
        # The node comes back before the consumer reads: what is judged is what was
        # acknowledged, read from the whole cluster (the next scenario finds it whole too).
        restart = subprocess.run([KAFKA, "restart-node", str(leader)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, timeout=180, check=False)
    restart_err = restart.stderr
    consumed, ctail, consume_s = consume(ctx, name, topic, RECORDS, {})
    row["fault"] = {"node": leader, "killed_after_s": killed_at, "producer_running": producing, "gone": gone,
                    "restarted": restart.returncode == 0}
    row["answered_by_proxy"] = sum(after.get(o, 0) - before.get(o, 0) for o in ANSWERED)
    row["forwarded"] = after.get("forwarded", 0) - before.get("forwarded", 0)
    checks = [(producing and gone, (f"leader {leader} SIGKILLed while the producer ran (running: {producing}, "
                                   f"process gone: {gone})")),
              (restart.returncode == 0, f"node {leader} restarted: {restart_err.strip()[-200:]}")]
    return finish_row(row, produced, consumed, 0, RECORDS, [tail, ctail], produce_s, consume_s, checks)


def scenario_retry(ctx, name, topic):
    row = base_row(ctx, name, "retry")
    row["topic"] = topic
    create_topic(ctx.args.upstream, topic)
    leader = leader_of(ctx.args.upstream, topic)
    before = ctx.metrics()
    step = start_produce(ctx, name, topic, 0, RECORDS, {"rate": FAULT_RATE, "request_timeout_ms": REQUEST_TIMEOUT_MS})
    producing = wait_producing(ctx, step, before.get("forwarded", 0))
    pid = node_pid(leader)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = wait_until(lambda: proc_state(pid) == "T", 2, 0.02)
        time.sleep(PAUSE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    produced, tail, produce_s = finish_produce(name, step, RECORDS)
    after = ctx.metrics()
    answered = sum(after.get(o, 0) - before.get(o, 0) for o in ANSWERED)
    consumed, ctail, consume_s = consume(ctx, name, topic, RECORDS, {})
    row["fault"] = {"node": leader, "paused_s": PAUSE_S, "producer_running": producing, "stopped": stopped}
    row["answered_by_proxy"] = answered
    row["forwarded"] = after.get("forwarded", 0) - before.get("forwarded", 0)
    checks = [(producing and stopped, (f"leader {leader} SIGSTOPped while the producer ran (running: {producing}, "
                                      f"stopped: {stopped})")),
              (answered >= 1 or ctx.direct,
               f"batches answered by the proxy during the run: {answered:g} (want at least 1)")]
    return finish_row(row, produced, consumed, 0, RECORDS, [tail, ctail], produce_s, consume_s, checks)


def scenario_tls_scram(ctx, name, topic):
    if not ctx.tls_bootstrap:
        row = base_row(ctx, name, "tls-scram")
        row.update(result="FAIL", errors=[("no TLS proxy: the cluster has no SASL_SSL listener "
                                          "(start it with KDP_KAFKA_SECURITY=1)")])
        return row
    settings = {"sasl": ctx.args.sasl, "ca": ctx.tls_ca}
    return produce_consume(ctx, name, "tls-scram", topic, 0, RECORDS, settings)


def run_scenario(ctx, name, scenario, topic):
    if scenario == "produce":
        return produce_consume(ctx, name, scenario, topic, 0, RECORDS)
    if scenario == "cluster":
        return scenario_cluster(ctx, name)
    if scenario == "resume":
        # The group of the first scenario committed what it read; it must read only what follows.
        return produce_consume(ctx, name, scenario, topic, RECORDS, RESUME_RECORDS, new_topic=False)
    return {"txn": scenario_txn, "leader-kill": scenario_leader_kill, "retry": scenario_retry,
            "tls-scram": scenario_tls_scram}[scenario](ctx, name, f"{topic}-{scenario}")


# Scenarios whose failures are checked against a control run without the proxy.
CONTROLLED = ("leader-kill", "retry", "tls-scram")


def attempt(ctx, name, sid, topic):
    try:
        return run_scenario(ctx, name, sid, topic)
    except Exception as e:  # noqa: BLE001 (any harness step that failed: the cell says so)
        return {**base_row(ctx, name, sid), "result": "FAIL", "errors": [f"{type(e).__name__}: {e}"]}


def consumed_clean(row):
    """Every record acked and consumed exactly once (whatever else the scenario checks)."""
    c = row.get("counts") or {}
    return bool(c) and c.get("acked") == c.get("consumed") == c.get("distinct") and not (
        c.get("missing") or c.get("duplicates") or c.get("unexpected"))


def with_control(row, control):
    """A scenario failed through the proxy: the same client, scenario and faults straight
    against the brokers (control). When the client fails there too, it is the client's own
    limit: `unsupported`, with both results; otherwise the failure stands (the proxy's)."""
    control.pop("_version", None)
    row["control"] = {k: control.get(k) for k in ("result", "counts", "errors", "fault", "topic")}
    if control["result"] == "FAIL":
        row["proxy_result"] = row["result"]
        row["result"] = "unsupported"
        row["detail"] = (f"the client fails this without the proxy too (control run straight to the brokers: "
                         f"{cell_text(control, True)}); through the proxy: "
                         f"{cell_text({**row, 'result': 'FAIL'}, True)}")
    return row


def cell(row, brief=False):
    """The markdown cell of a row."""
    return cell_text(row, brief).replace("|", "\\|").replace("\n", " ").replace("\t", " ")


def cell_text(row, brief=False):
    if row["result"] == "not installable":
        return f"not installable: {row['detail']}"
    if row["result"] == "unsupported":
        return f"unsupported: {row['detail']}"
    c = row.get("counts") or {}
    sid = row.get("scenario_id")
    if sid == "cluster" and c:
        text = (f"{row['result']}: {c['brokers']} brokers listed, {c['at_proxy_address']} of "
                f"{len(row['expected'])} proxy addresses, other addresses: {', '.join(c['elsewhere']) or 'none'}")
    elif c:
        text = (f"{row['result']}: {c['acked']} acked, {c['consumed']} consumed, {c['distinct']} distinct, "
                f"{c['missing']} missing, {c['duplicates']} duplicated, {c['unexpected']} unexpected")
        if sid == "txn":
            text += f"; aborted transaction: {c.get('aborted_acked')} acked, read {c.get('isolation')}"
        if sid == "leader-kill" and row.get("fault"):
            f = row["fault"]
            text += f"; node {f['node']} killed {f['killed_after_s']} s into the produce"
        if sid == "retry" and row.get("fault"):
            text += f"; node {row['fault']['node']} paused {row['fault']['paused_s']:g} s"
            if not row.get("direct"):
                text += f", {row['answered_by_proxy']:g} batches answered by the proxy"
    else:
        text = row["result"]
    if row["result"] != "pass" and row.get("errors"):
        text += f"; first error: {row['errors'][0][:200] if brief else row['errors'][0]}"
    elif row["result"] != "pass" and row.get("stderr_tail") and not brief:
        text += f"; stderr ends: {row['stderr_tail'].splitlines()[-1]}"
    return text


def scenario_id(row):
    if row.get("scenario_id") in SCENARIOS:
        return row["scenario_id"]
    for sid, (_, text) in SCENARIOS.items():
        if row.get("scenario") == text:
            return sid
    return None


def write(rows, out, meta):
    ids = list(SCENARIOS)
    rows = [r for r in rows if scenario_id(r)]
    for r in rows:
        r["scenario_id"] = scenario_id(r)
    rows = sorted(rows, key=lambda r: (r["kafka_version"], ORDER.index(r["client"]), ids.index(r["scenario_id"])))
    with open(out + ".json", "w") as f:
        json.dump({"generated_by": "scripts/compat", **meta, "rows": rows}, f, indent=2)
        f.write("\n")
    lines = ["# Client compatibility", "",
             "Generated by `scripts/compat` (do not edit by hand): each client, installed from its own",
             "registry, runs each scenario through the proxy in front of a 3-node Apache Kafka (KRaft).",
             "Every result is an assertion on what the client's consumer read (each value exactly once,",
             "none missing, none unexpected), plus the scenario's own checks:", ""]
    for short, text in SCENARIOS.values():
        lines.append(f"- **{short}**: {text}.")
    lines += ["", "`unsupported` cells name what the client lacks; they are not counted as passes or failures.", ""]
    versions = sorted({r["kafka_version"] for r in rows}, reverse=True)
    lines += ["## Summary", "", "| client | " + " | ".join(SCENARIOS[s][0] for s in ids) + " |",
              "|---|" + "---|" * len(ids)]
    for v in versions:
        for client in ORDER:
            mine = {r["scenario_id"]: r for r in rows if r["kafka_version"] == v and r["client"] == client}
            if not mine:
                continue
            marks = [{"pass": "pass", "unsupported": "unsupported"}.get(mine[s]["result"], mine[s]["result"])
                     if s in mine else "not run" for s in ids]
            version = next(iter(mine.values()))["version"]
            lines.append(f"| {client} {version} on Kafka {v} | " + " | ".join(marks) + " |")
    lines += ["", "## Cells", "",
              "| client | version | Kafka | scenario | result | seconds | run at (UTC) |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['client']} | {r['version']} | {r['kafka_version']} | {SCENARIOS[r['scenario_id']][0]} | "
                     f"{cell(r)} | {r.get('seconds', '-')} | {r['run_at']} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def client_version(name, rows, kafka_version):
    if name == "kcat":
        return kcat_version()
    if name == "java":
        return f"kafka-clients {kafka_version}"
    return next((r["_version"] for r in rows if r.get("_version")), "unknown")


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--proxy", "--proxy-log", "--metrics", "--upstream", "--kafka-version", "--clients-dir",
                "--status-dir", "--out"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--tls-proxy")
    ap.add_argument("--tls-ca")
    ap.add_argument("--sasl-upstream", help="the brokers' SASL_SSL listeners (control runs)")
    ap.add_argument("--broker-ca", help="the CA of the brokers' SASL_SSL certificates (control runs)")
    ap.add_argument("--sasl", default="SCRAM-SHA-512:alice:alice-secret")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--direct", action="store_true",
                    help="control run: the clients talk to the brokers themselves, no proxy in between")
    ap.add_argument("clients", nargs="+")
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown} (known: {', '.join(SCENARIOS)})")
    if "resume" in scenarios and "produce" not in scenarios:
        ap.error("resume needs produce (the group resumes from what produce's consumer committed)")
    ctx = Ctx(args, direct=args.direct)
    control = Ctx(args, direct=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    rows = []
    for name in args.clients:
        topic = f"compat-{name}-{stamp}"
        err_file = os.path.join(args.status_dir, f"{name}.install-error")
        client_rows = []
        for sid in scenarios:
            if os.path.exists(err_file):
                with open(err_file) as f:
                    row = {**base_row(ctx, name, sid), "result": "not installable", "detail": f.read().strip()}
            elif (name, sid) in UNSUPPORTED:
                row = {**base_row(ctx, name, sid), "result": "unsupported", "detail": UNSUPPORTED[(name, sid)]}
            else:
                row = attempt(ctx, name, sid, topic)
                if row["result"] == "FAIL" and sid == "retry" and consumed_clean(row):
                    # Every record arrived once, but no retry met its original at the proxy:
                    # whether one does depends on timing, so one more storm (the row keeps
                    # what the first one measured).
                    first = cell_text(row, True)
                    row = attempt(ctx, name, sid, f"{topic}-again")
                    row["first_attempt"] = first
                if row["result"] == "FAIL" and (name, sid) in KNOWN_LIMITS and consumed_clean(row):
                    row.update(proxy_result="FAIL", result="unsupported",
                               detail=f"{KNOWN_LIMITS[(name, sid)]}; measured: {cell_text(row, True)}")
                elif row["result"] == "FAIL" and sid in CONTROLLED and not ctx.direct:
                    row = with_control(row, attempt(control, name, sid, f"{topic}-direct"))
            row["run_at"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
            client_rows.append(row)
            print(f"{name} ({SCENARIOS[sid][0]}): {cell(row)}", flush=True)
        version = "-" if os.path.exists(err_file) else client_version(name, client_rows, args.kafka_version)
        for r in client_rows:
            r.pop("_version", None)
            r["version"] = version
        rows.extend(client_rows)
    kept = []
    if args.append and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            fresh = {(r["client"], r["kafka_version"], r["scenario_id"]) for r in rows}
            kept = [r for r in json.load(f)["rows"]
                    if (r["client"], r["kafka_version"], scenario_id(r)) not in fresh]
    write(kept + rows, args.out, {"records_per_scenario": RECORDS})
    return 0 if all(r["result"] in ("pass", "unsupported") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
