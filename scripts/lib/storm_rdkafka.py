#!/usr/bin/env python3
"""The librdkafka producer of scripts/storm (confluent-kafka-python).

    storm_rdkafka.py BOOTSTRAP TOPIC RECORDS RATE SIZE [key=value...]

Sends RECORDS records of SIZE bytes at RATE records/s with an idempotent
acks=all producer (linger.ms=5, batch.size=65536, retry.backoff.ms=50; the
key=value arguments are added to or override its configuration), waits for
every delivery report and prints one JSON object on stdout:

    {"client": "librdkafka", "version": ..., "sent": N, "acked": N, "errors": [...],
     "txretries": R, "req_timeouts": T, "produce_requests": P, "txmsgs": M}

From librdkafka's last statistics (statistics.interval.ms=500): txmsgs, the
messages it transmitted, each transmission counted (so txmsgs - sent is the
records it sent again); and summed over the brokers, txretries (requests
retried; requests, not records, and fewer than the timed-out ones in the
storms measured so far), req_timeouts (requests that timed out) and
produce_requests (the "Produce" entry of each broker's req map).
"""
import json
import sys
import time

from confluent_kafka import Producer, libversion

if len(sys.argv) < 6:
    raise SystemExit(__doc__)
bootstrap, topic = sys.argv[1], sys.argv[2]
records, rate, size = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])

stats = {}
acked = 0
errors = []


def on_stats(text):
    stats["last"] = json.loads(text)


def on_delivery(err, _msg):
    global acked
    if err is None:
        acked += 1
    elif len(errors) < 10:
        errors.append(str(err))
    else:
        errors.append(None)


conf = {
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 65536,
    "retry.backoff.ms": 50,
    "statistics.interval.ms": 500,
    "stats_cb": on_stats,
    "client.id": "kdp-storm-librdkafka",
}
for kv in sys.argv[6:]:
    k, _, v = kv.partition("=")
    conf[k] = v
producer = Producer(conf)

t0 = time.monotonic()
for i in range(records):
    due = t0 + i / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    # unique, fixed-size values: record i is "i" zero-padded, then dots
    value = f"{i:010d}".ljust(size, ".").encode()
    while True:
        try:
            producer.produce(topic, value=value, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)
left = producer.flush(600)
# one more statistics interval, so the last figures include the end of the run
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    producer.poll(0.1)

last = stats.get("last", {})
brokers = last.get("brokers", {}).values()
print(json.dumps({
    "client": "librdkafka",
    "version": libversion()[0],
    "sent": records,
    "acked": acked,
    "undelivered": left,
    "errors": [e for e in errors if e is not None],
    "error_count": len(errors),
    "txretries": sum(b.get("txretries", 0) for b in brokers),
    "req_timeouts": sum(b.get("req_timeouts", 0) for b in brokers),
    "produce_requests": sum(b.get("req", {}).get("Produce", 0) for b in brokers),
    "txmsgs": last.get("txmsgs"),
}))
