"""kafka-python side of the compatibility scenarios (same interface and KDP_COMPAT_* settings
as confluent_client.py)."""
import json
import os
import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def common():
    conf = {"client_id": "compat-kafka-python"}
    sasl = os.environ.get("KDP_COMPAT_SASL")
    if sasl:
        mechanism, user, password = sasl.split(":", 2)
        conf.update(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_plain_username=user,
                    sasl_plain_password=password, ssl_cafile=os.environ["KDP_COMPAT_CA"])
    return conf


def produce(bootstrap, topic, count, start=0):
    # Idempotence and transactions: both in the pinned kafka-python (requirements.txt).
    conf = {**common(), "bootstrap_servers": bootstrap, "acks": "all", "enable_idempotence": True}
    timeout_ms = os.environ.get("KDP_COMPAT_REQUEST_TIMEOUT_MS")
    if timeout_ms:
        conf.update(request_timeout_ms=int(timeout_ms), delivery_timeout_ms=120000, retry_backoff_ms=100)
    txn_id = os.environ.get("KDP_COMPAT_TXN_ID")
    if txn_id:
        conf["transactional_id"] = txn_id
    rate = float(os.environ.get("KDP_COMPAT_RATE", "0"))
    producer = KafkaProducer(**conf)
    out = {"idempotence": True}
    if txn_id:
        producer.init_transactions()
        producer.begin_transaction()
    futures = []
    t0 = time.monotonic()
    for n, i in enumerate(range(start, start + count)):
        if rate:
            time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        futures.append(producer.send(topic, value=f"v-{i}".encode()))
    producer.flush(120)
    acked, errors = 0, []
    for f in futures:
        try:
            f.get(timeout=120)
            acked += 1
        except Exception as e:  # noqa: BLE001 (the record's own failure, whatever it is, reported as such)
            errors.append(repr(e))
    if txn_id:
        if os.environ.get("KDP_COMPAT_TXN_ABORT") == "1":
            producer.abort_transaction()
            out["transaction"] = "aborted"
        else:
            producer.commit_transaction()
            out["transaction"] = "committed"
    producer.close(10)
    return {**out, "acked": acked, "errors": errors[:10]}


def consume(bootstrap, topic, count, timeout_s):
    isolation = "read_committed" if os.environ.get("KDP_COMPAT_READ_COMMITTED") == "1" else "read_uncommitted"
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"compat-kafka-python-{topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             isolation_level=isolation, **common())
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
    return {"values": values, "errors": [], "isolation": isolation}


def cluster(bootstrap):
    """DescribeCluster through the Admin API: the brokers the client is told about."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **common())
    desc = admin.describe_cluster()
    admin.close()
    return {"brokers": [f"{b['host']}:{b['port']}" for b in desc["brokers"]], "errors": []}


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    try:
        if cmd == "cluster":
            out = cluster(bootstrap)
        elif cmd == "produce":
            out = produce(bootstrap, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
        else:
            out = consume(bootstrap, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    except kafka.errors.KafkaError as e:  # e.g. a transaction the client could not finish
        out = {"errors": [repr(e)]}
    out["version"] = kafka.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
