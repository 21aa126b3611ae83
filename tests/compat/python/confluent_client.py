"""confluent-kafka-python (librdkafka) side of the compatibility scenarios.

    python confluent_client.py produce BOOTSTRAP TOPIC COUNT [START]
    python confluent_client.py consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
    python confluent_client.py cluster BOOTSTRAP

Prints one JSON object on stdout: produce -> {"acked", "errors", "idempotence"[, "transaction"]},
consume (commits what it read, synchronously) -> {"values"}, cluster -> {"brokers": ["host:port"]};
scripts/lib/compat.py judges the outcome. The scenario's client settings come from the
environment (the same KDP_COMPAT_* variables for every client, see scripts/lib/compat.py):
KDP_COMPAT_SASL (MECHANISM:USER:PASSWORD, over TLS trusting KDP_COMPAT_CA),
KDP_COMPAT_REQUEST_TIMEOUT_MS (short request timeout, retries on), KDP_COMPAT_RATE
(records per second), KDP_COMPAT_TXN_ID and KDP_COMPAT_TXN_ABORT (one transaction,
committed or aborted), KDP_COMPAT_READ_COMMITTED (consumer isolation).
"""
import json
import os
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient


def version():
    return f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"


def common():
    conf = {"client.id": "compat-confluent"}
    sasl = os.environ.get("KDP_COMPAT_SASL")
    if sasl:
        mechanism, user, password = sasl.split(":", 2)
        conf.update({"security.protocol": "SASL_SSL", "sasl.mechanism": mechanism, "sasl.username": user,
                     "sasl.password": password, "ssl.ca.location": os.environ["KDP_COMPAT_CA"]})
    return conf


def produce(bootstrap, topic, count, start=0):
    conf = {**common(), "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
    timeout_ms = os.environ.get("KDP_COMPAT_REQUEST_TIMEOUT_MS")
    if timeout_ms:
        # request.timeout.ms is the wait the request asks of the broker; socket.timeout.ms is
        # when librdkafka gives up on a request in flight (and retries it).
        conf.update({"request.timeout.ms": int(timeout_ms), "socket.timeout.ms": int(timeout_ms) + 500,
                     "message.timeout.ms": 120000, "retry.backoff.ms": 100})
    txn_id = os.environ.get("KDP_COMPAT_TXN_ID")
    if txn_id:
        conf["transactional.id"] = txn_id
    rate = float(os.environ.get("KDP_COMPAT_RATE", "0"))
    producer = Producer(conf)
    acked, errors = [0], []

    def on_delivery(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            errors.append(str(err))

    out = {"idempotence": True}
    if txn_id:
        producer.init_transactions(30)
        producer.begin_transaction()
    t0 = time.monotonic()
    for n, i in enumerate(range(start, start + count)):
        if rate:
            time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        while True:
            try:
                producer.produce(topic, value=f"v-{i}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if left:
        errors.append(f"{left} records still queued after 120 s")
    if txn_id:
        if os.environ.get("KDP_COMPAT_TXN_ABORT") == "1":
            producer.abort_transaction(30)
            out["transaction"] = "aborted"
        else:
            producer.commit_transaction(30)
            out["transaction"] = "committed"
    return {**out, "acked": acked[0], "errors": errors[:10]}


def consume(bootstrap, topic, count, timeout_s):
    isolation = "read_committed" if os.environ.get("KDP_COMPAT_READ_COMMITTED") == "1" else "read_uncommitted"
    consumer = Consumer({
        **common(),
        "bootstrap.servers": bootstrap,
        "group.id": f"compat-confluent-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
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
    return {"values": values, "errors": errors[:10], "isolation": isolation}


def cluster(bootstrap):
    """DescribeCluster through the Admin API: the brokers the client is told about."""
    admin = AdminClient({**common(), "bootstrap.servers": bootstrap})
    # The admin handle must outlive the future: a collected handle fails it with _DESTROY.
    desc = admin.describe_cluster(request_timeout=30).result()
    return {"brokers": [f"{n.host}:{n.port}" for n in desc.nodes], "errors": []}


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    try:
        if cmd == "cluster":
            out = cluster(bootstrap)
        elif cmd == "produce":
            out = produce(bootstrap, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
        else:
            out = consume(bootstrap, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    except confluent_kafka.KafkaException as e:  # e.g. a transaction the client could not finish
        out = {"errors": [str(e)]}
    out["version"] = version()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
