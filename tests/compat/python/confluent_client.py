"""confluent-kafka-python (librdkafka) side of the compatibility scenarios.

    python confluent_client.py produce BOOTSTRAP TOPIC COUNT [START]
    python confluent_client.py consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
    python confluent_client.py cluster BOOTSTRAP

Prints one JSON object on stdout: produce -> {"acked", "errors", "idempotence"},
consume (commits what it read, synchronously) -> {"values"}, cluster -> {"brokers": ["host:port"]}; scripts/lib/compat.py judges the outcome.
"""
import json
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient


def version():
    return f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"


def produce(bootstrap, topic, count, start=0):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "client.id": "compat-confluent",
    })
    acked, errors = [0], []

    def on_delivery(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            errors.append(str(err))

    for i in range(start, start + count):
        while True:
            try:
                producer.produce(topic, value=f"v-{i}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        errors.append(f"{left} records still queued after 60 s")
    return {"acked": acked[0], "errors": errors[:10], "idempotence": True}


def consume(bootstrap, topic, count, timeout_s):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"compat-confluent-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "client.id": "compat-confluent",
    })
    consumer.subscribe([topic])
    values, errors = [], []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            errors.append(str(msg.error()))
            continue
        values.append(msg.value().decode())
    # Linger briefly so a duplicate delivered right after the last expected record is seen.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            values.append(msg.value().decode())
    if values:
        consumer.commit(asynchronous=False)  # the group's position, for the resume scenario
    consumer.close()
    return {"values": values, "errors": errors[:10]}


def cluster(bootstrap):
    """DescribeCluster through the Admin API: the brokers the client is told about."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-confluent"})
    # The admin handle must outlive the future: a collected handle fails it with _DESTROY.
    desc = admin.describe_cluster(request_timeout=30).result()
    return {"brokers": [f"{n.host}:{n.port}" for n in desc.nodes], "errors": []}


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    if cmd == "cluster":
        out = cluster(bootstrap)
    elif cmd == "produce":
        out = produce(bootstrap, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        out = consume(bootstrap, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    out["version"] = version()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
