#!/usr/bin/env python3
"""Retry storms of scripts/storm, summed up from what they measured.

    storm_report.py --client java|librdkafka --output FILE --metrics-before FILE
        --metrics-after FILE --log-dump FILE --records N --rate R --pauses K
        --pause-s S --fault pause|slow --delay-s D --exit CODE
    storm_report.py --markdown FILE...

The second form prints the storms of FILE... (the first form's JSON, one
object a line) as a Markdown table; scripts/lib/bench_report.py uses it too.

--output is the client's stdout: ProducerPerformance's with --print-metrics
(java) or storm_rdkafka.py's JSON (librdkafka). --metrics-* are the proxy's
/metrics before and after the storm. --log-dump is what
kafka.tools.DumpLogSegments printed for every partition of the storm's topic
(one "Dumping <dir>/<file>" line before each file's batches).

Prints one JSON object: the client's own count of what it sent, had
acknowledged and retried (the Java client's record-retry-total; librdkafka's
txmsgs minus the records sent, with its txretries and req_timeouts beside);
what the proxy answered (batches from its cache, batches coalesced with their
in-flight original, bytes); what the broker's log holds; and the checks:
lost = acknowledged records missing from the log, duplicated = records in
the log more than once, both by the idempotent producer's (partition,
producer id, epoch, sequence).
"""
import argparse
import json
import re
import sys

# RecordBatch header bytes (magic 2): what a batch carries beyond its records.
BATCH_HEADER_BYTES = 61


def parse_args(argv):
    ap = argparse.ArgumentParser()
    for name in ("client", "output", "metrics-before", "metrics-after", "log-dump", "fault"):
        ap.add_argument("--" + name, required=True)
    for name in ("records", "pauses", "exit"):
        ap.add_argument("--" + name, type=int, required=True)
    for name in ("rate", "pause-s", "delay-s"):
        ap.add_argument("--" + name, type=float, required=True)
    return ap.parse_args(argv)


def summarize(a):



    def metric_sum(path, name, **labels):
        total = 0.0
        for line in open(path):
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rstrip("\n").rpartition(" ")
            if not (series == name or series.startswith(name + "{")):
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


    def proxy_delta(name, **labels):
        return round(metric_sum(a.metrics_after, name, **labels) - metric_sum(a.metrics_before, name, **labels))


    proxy = {
        "produce_requests": proxy_delta("kdp_requests_total", api="produce"),
        "batches_forwarded": proxy_delta("kdp_produce_batches_total", outcome="forwarded"),
        "batches_duplicate": proxy_delta("kdp_produce_batches_total", outcome="duplicate"),
        "batches_coalesced": proxy_delta("kdp_produce_batches_total", outcome="coalesced"),
        "bytes_saved": proxy_delta("kdp_dedup_bytes_saved_total"),
    }
    proxy["batches_answered"] = proxy["batches_duplicate"] + proxy["batches_coalesced"]

    text = open(a.output).read()
    if a.client == "java":
        def pm(name):
            m = re.search(r"^producer-metrics:%s:\{client-id=[^}]*\}\s*:\s*([0-9.]+)" % name, text, re.M)
            return None if m is None else round(float(m.group(1)))
        summary = re.findall(r"^(\d+) records sent,", text, re.M)
        errors = pm("record-error-total")
        client = {
            "tool": "ProducerPerformance --print-metrics",
            "sent": int(summary[-1]) if summary else None,
            "errors": errors,
            "acked": None if not summary or errors is None else int(summary[-1]) - errors,
            "records_retried": pm("record-retry-total"),
            "requests": pm("request-total"),
        }
        retries = client["records_retried"]
        retries_unit = "records (record-retry-total)"
    else:
        r = json.loads(text.strip().splitlines()[-1])
        client = {
            "tool": f"confluent-kafka-python, librdkafka {r['version']}",
            "sent": r["sent"],
            "errors": r["error_count"],
            "error_samples": r["errors"],
            "acked": r["acked"],
            "transmitted": r["txmsgs"],
            "records_resent": None if r["txmsgs"] is None else r["txmsgs"] - r["sent"],
            "requests_retried": r["txretries"],
            "request_timeouts": r["req_timeouts"],
            "produce_requests": r["produce_requests"],
        }
        retries = client["records_resent"]
        retries_unit = "records (txmsgs - records sent)"

    # The broker's log: every batch's partition, producer, epoch and sequences.
    BATCH = re.compile(r"baseOffset: (\d+) lastOffset: (\d+) count: (\d+) baseSequence: (-?\d+) "
                       r"lastSequence: (-?\d+) producerId: (-?\d+) producerEpoch: (-?\d+) .*?isControl: (\w+)"
                       r".*? size: (\d+)")
    seqs, appended, batches, batch_bytes, epochs, partition = {}, 0, 0, 0, set(), None
    for line in open(a.log_dump):
        if line.startswith("Dumping "):
            m = re.search(r"-(\d+)/[0-9]+\.log$", line.strip())
            partition = int(m.group(1)) if m else None
            continue
        m = BATCH.search(line)
        if not m or m.group(8) == "true":
            continue
        count, base_seq, last_seq = int(m.group(3)), int(m.group(4)), int(m.group(5))
        pid, epoch = int(m.group(6)), int(m.group(7))
        appended += count
        batches += 1
        batch_bytes += int(m.group(9))
        epochs.add((pid, epoch))
        s = seqs.setdefault((partition, pid, epoch), [])
        s.extend(range(base_seq, last_seq + 1) if base_seq >= 0 else [None] * count)
    distinct = sum(len(set(x for x in s if x is not None)) + sum(1 for x in s if x is None) for s in seqs.values())
    acked = client["acked"]
    log = {
        "records": appended,
        "batches": batches,
        "distinct_records": distinct,
        "producer_epochs": len(epochs),
        "record_bytes": round((batch_bytes - BATCH_HEADER_BYTES * batches) / appended, 1) if appended else None,
    }
    checks = {
        "duplicated": appended - distinct,
        "lost": None if acked is None else max(0, acked - distinct),
        "client_errors": client["errors"],
    }
    # Records the proxy answered, from its bytes: each answered batch is a
    # RecordBatch header and records of the size the log holds. The share of
    # the client's retried records the proxy answered compares records with
    # records; the rest of the retries reached the broker.
    answered_records = None
    if log["record_bytes"]:
        answered_records = round((proxy["bytes_saved"] - BATCH_HEADER_BYTES * proxy["batches_answered"])
                                 / log["record_bytes"])
    proxy["records_answered_from_bytes"] = answered_records
    share = None
    if retries and answered_records is not None:
        share = answered_records / retries
    return {
        "client": a.client,
        "fault": a.fault,
        "delay_s": a.delay_s,
        "exit": a.exit,
        "records": a.records,
        "rate": a.rate,
        "pauses": a.pauses,
        "pause_s": a.pause_s,
        "client_side": client,
        "client_retries": retries,
        "client_retries_unit": retries_unit,
        "proxy": proxy,
        "answered_share_of_retries": share,
        "log": log,
        "checks": checks,
        "ok": a.exit == 0 and checks["duplicated"] == 0 and checks["lost"] == 0 and not checks["client_errors"],
    }


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown(storms):
    """The storms as a table: what the client retried next to what the proxy answered."""
    md = ["| client | records | fault | client retried (records) | proxy answered: batches (cache + coalesced) "
          "| ≈ records | share of the retries | in the log / acknowledged | lost | duplicated | client errors |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for s in storms:
        c, p, log, ck = s["client_side"], s["proxy"], s["log"], s["checks"]
        fault = (f"paused {s['pauses']} x {s['pause_s']} s" if s["fault"] == "pause" else
                 f"Produce answers {s['delay_s']} s late, {s['pauses']} x {s['pause_s']} s")
        md.append(f"| {s['client']} ({c['tool']}) | {s['records']} at {s['rate']:.0f}/s | {fault} "
                  f"| {s['client_retries']} | {p['batches_answered']} ({p['batches_duplicate']} + {p['batches_coalesced']}) "
                  f"| {p['records_answered_from_bytes']} | {pct(s['answered_share_of_retries'])} "
                  f"| {log['records']} / {c['acked']} | {ck['lost']} | {ck['duplicated']} | {ck['client_errors']} |")
        if s["client"] == "librdkafka":
            notes.append(f"librdkafka ({s['fault']}) also counted {c['requests_retried']} requests retried (txretries) and "
                         f"{c['request_timeouts']} timed out (req_timeouts); its client retries above are "
                         f"txmsgs ({c['transmitted']}) minus the records sent.")
        if s["exit"] != 0:
            notes.append(f"{s['client']} ({s['fault']}): the producer exited with {s['exit']}.")
    md.append("")
    md.append("Client retries: the Java client's record-retry-total; librdkafka's txmsgs minus the records sent. "
              "Proxy: batches answered from its cache or coalesced with their in-flight original, and the records "
              "in them (its bytes kept from the broker over the log's bytes per record). Lost and duplicated: "
              "acknowledged records missing from the broker's log, and records in it twice, by (partition, "
              "producer id, epoch, sequence) from DumpLogSegments.")
    md.extend(notes)
    return md


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:
        storms = [json.loads(l) for f in sys.argv[2:] for l in open(f) if l.strip()]
        print("\n".join(markdown(storms)))
    else:
        print(json.dumps(summarize(parse_args(sys.argv[1:]))))
