// KafkaJS side of the compatibility scenarios (same interface and KDP_COMPAT_* settings as
// tests/compat/franz-go).
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');
const { version } = require('kafkajs/package.json');

const env = process.env;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function clientConfig(bootstrap) {
  const config = { clientId: 'compat-kafkajs', brokers: bootstrap.split(','), logLevel: logLevel.ERROR };
  if (env.KDP_COMPAT_SASL) {
    const [mechanism, username, ...password] = env.KDP_COMPAT_SASL.split(':');
    config.sasl = { mechanism: mechanism.toLowerCase(), username, password: password.join(':') };
    config.ssl = { ca: [fs.readFileSync(env.KDP_COMPAT_CA, 'utf8')] };
  }
  if (env.KDP_COMPAT_REQUEST_TIMEOUT_MS) {
    // The client gives up on a request 500 ms after the wait it asks of the broker and retries.
    config.requestTimeout = Number(env.KDP_COMPAT_REQUEST_TIMEOUT_MS) + 500;
    config.retry = { retries: 50, initialRetryTime: 100, maxRetryTime: 1000 };
  }
  return config;
}

async function produce(kafka, topic, count, start) {
  // KafkaJS's idempotent producer needs maxInFlightRequests 1 and acks -1 (all).
  const txnId = env.KDP_COMPAT_TXN_ID;
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, transactionalId: txnId });
  await producer.connect();
  const rate = Number(env.KDP_COMPAT_RATE || 0);
  const timeout = env.KDP_COMPAT_REQUEST_TIMEOUT_MS ? Number(env.KDP_COMPAT_REQUEST_TIMEOUT_MS) : undefined;
  const out = { idempotence: true };
  const sender = txnId ? await producer.transaction() : producer;
  let acked = 0;
  const errors = [];
  // Batches of 100 (10 when throttled: a batch is one request in KafkaJS).
  const batch = rate ? 10 : 100;
  const t0 = Date.now();
  for (let i = start; i < start + count; i += batch) {
    if (rate) await sleep(Math.max(0, t0 + ((i - start) / rate) * 1000 - Date.now()));
    const messages = [];
    for (let j = i; j < Math.min(i + batch, start + count); j++) messages.push({ value: `v-${j}` });
    try {
      await sender.send({ topic, acks: -1, timeout, messages });
      acked += messages.length;
    } catch (e) {
      if (errors.length < 10) errors.push(String(e));
    }
  }
  if (txnId) {
    try {
      if (env.KDP_COMPAT_TXN_ABORT === '1') {
        await sender.abort();
        out.transaction = 'aborted';
      } else {
        await sender.commit();
        out.transaction = 'committed';
      }
    } catch (e) {
      errors.push(`end transaction: ${e}`);
      out.transaction = 'failed';
    }
  }
  await producer.disconnect();
  return { ...out, acked, errors };
}

async function consume(kafka, topic, count, timeoutS) {
  const readCommitted = env.KDP_COMPAT_READ_COMMITTED === '1';
  const consumer = kafka.consumer({ groupId: `compat-kafkajs-${topic}`, readUncommitted: !readCommitted });
  const values = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  // autoCommit (KafkaJS's default) commits after every batch: the group's position,
  // for the resume scenario.
  await consumer.run({ autoCommit: true, eachMessage: async ({ message }) => { values.push(message.value.toString()); } });
  const deadline = Date.now() + timeoutS * 1000;
  while (values.length < count && Date.now() < deadline) await sleep(100);
  await sleep(2000); // a duplicate right after the last record is seen
  await consumer.disconnect();
  return { values, errors: [], isolation: readCommitted ? 'read_committed' : 'read_uncommitted' };
}

async function cluster(kafka) {
  const admin = kafka.admin();
  await admin.connect();
  const desc = await admin.describeCluster();
  await admin.disconnect();
  return { brokers: desc.brokers.map((b) => `${b.host}:${b.port}`), errors: [] };
}

async function main() {
  const [cmd, bootstrap, topic, countArg, timeoutArg] = process.argv.slice(2);
  const kafka = new Kafka(clientConfig(bootstrap));
  const count = Number(countArg);
  const out = cmd === 'cluster' ? await cluster(kafka) : cmd === 'produce' ? await produce(kafka, topic, count, Number(timeoutArg || 0)) : await consume(kafka, topic, count, Number(timeoutArg));
  out.version = version;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stdout.write(JSON.stringify({ errors: [String(e)], version }) + '\n'); process.exit(1); });
