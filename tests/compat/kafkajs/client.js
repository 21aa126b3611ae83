// KafkaJS side of the compatibility scenarios (same interface as tests/compat/franz-go).
'use strict';
const { Kafka, logLevel } = require('kafkajs');
const { version } = require('kafkajs/package.json');

async function produce(kafka, topic, count, start) {
  // KafkaJS's idempotent producer needs maxInFlightRequests 1 and acks -1 (all).
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  let acked = 0;
  const errors = [];
  const batch = 100;
  for (let i = start; i < start + count; i += batch) {
    const messages = [];
    for (let j = i; j < Math.min(i + batch, start + count); j++) messages.push({ value: `v-${j}` });
    try {
      await producer.send({ topic, acks: -1, messages });
      acked += messages.length;
    } catch (e) {
      if (errors.length < 10) errors.push(String(e));
    }
  }
  await producer.disconnect();
  return { acked, errors, idempotence: true };
}

async function consume(kafka, topic, count, timeoutS) {
  const consumer = kafka.consumer({ groupId: `compat-kafkajs-${topic}` });
  const values = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  // autoCommit (KafkaJS's default) commits after every batch: the group's position,
  // for the resume scenario.
  await consumer.run({ autoCommit: true, eachMessage: async ({ message }) => { values.push(message.value.toString()); } });
  const deadline = Date.now() + timeoutS * 1000;
  while (values.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 2000)); // a duplicate right after the last record is seen
  await consumer.disconnect();
  return { values, errors: [] };
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
  const kafka = new Kafka({ clientId: 'compat-kafkajs', brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const count = Number(countArg);
  const out = cmd === 'cluster' ? await cluster(kafka) : cmd === 'produce' ? await produce(kafka, topic, count, Number(timeoutArg || 0)) : await consume(kafka, topic, count, Number(timeoutArg));
  out.version = version;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stdout.write(JSON.stringify({ errors: [String(e)] }) + '\n'); process.exit(1); });
