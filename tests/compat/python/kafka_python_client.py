"""kafka-python side of the compatibility scenarios (same interface as confluent_client.py)."""
import json
import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def produce(bootstrap, topic, count, start=0):
    # enable_idempotence exists since kafka-python 2.1.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             enable_idempotence=True, client_id="compat-kafka-python")
    futures = [producer.send(topic, value=f"v-{i}".encode()) for i in range(start, start + count)]
    producer.flush(60)
    acked, errors = 0, []
    for f in futures:
        try:
            f.get(timeout=60)
            acked += 1
        except Exception as e:  # the record's own failure, reported as such
            errors.append(repr(e))
    producer.close(10)
    return {"acked": acked, "errors": errors[:10], "idempotence": True}


def consume(bootstrap, topic, count, timeout_s):
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap,
                             group_id=f"compat-kafka-python-{topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             client_id="compat-kafka-python")
    values = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            values.extend(r.value.decode() for r in recs)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        for recs in consumer.poll(timeout_ms=200).values():
            values.extend(r.value.decode() for r in recs)
    if values:
        consumer.commit()  # synchronous: the group's position, for the resume scenario
    consumer.close()
    return {"values": values, "errors": []}


def cluster(bootstrap):
    """DescribeCluster through the Admin API: the brokers the client is told about."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kafka-python")
    desc = admin.describe_cluster()
    admin.close()
    return {"brokers": [f"{b['host']}:{b['port']}" for b in desc["brokers"]], "errors": []}


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    if cmd == "cluster":
        out = cluster(bootstrap)
    elif cmd == "produce":
        out = produce(bootstrap, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        out = consume(bootstrap, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    out["version"] = kafka.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
