/*
 * Kafka client harness for the kafka-dedup-proxy integration tests.
 *
 * Uses only kafka-clients (compiles and runs against the 3.9 and 4.x jars).
 * Every command prints exactly one JSON object on stdout; the exit code is
 * 0 on success, 1 on failure, 2 on a usage error. Client logging goes to
 * stderr. Built and run by scripts/kafka:
 *
 *   scripts/kafka run ClientHarness <command> [--option value]...
 *
 * Commands (see USAGE below for every option):
 *   produce       send N deterministic records, wait for every ack
 *   consume       read until N records (or a timeout), count duplicates
 *   cluster       cluster nodes, controller, group coordinator, metadata
 *   create-topic  create a topic (exists is fine), wait for its leaders
 *   topic-leader  leader of one partition
 *   scram-users   create or update SCRAM-SHA-256/512 credentials
 *   acl-allow     allow a principal an operation on a topic
 */

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class ClientHarness {

    static final String USAGE = String.join("\n",
        "usage: ClientHarness <command> [options]",
        "",
        "Prints one JSON object on stdout; exit 0 on success, 1 on failure, 2 on usage errors.",
        "Every command takes --bootstrap B, --extra k=v (client config, repeatable) and",
        "--client-id ID.",
        "",
        "  produce --bootstrap B --topic T --count N [--size BYTES] [--acks all|1|0]",
        "          [--idempotence true|false] [--partition P] [--key-prefix K]",
        "          [--value-prefix V] [--start I] [--transactional-id ID [--abort]]",
        "          [--linger-ms L] [--rate R] [--then-start J --then-count M] [--extra k=v]...",
        "      record i (i = start..start+N-1) has value \"V-i\" (V defaults to \"v\")",
        "      right-padded with '.' to BYTES, and key \"K-i\" when --key-prefix is given;",
        "      sent at R records per second when --rate is given (default: as fast as possible);",
        "      with --then-count the same producer goes on with records J..J+M-1.",
        "      -> {\"sent\":N,\"acked\":N,\"errors\":[...],\"offsets\":{\"<partition>\":[o1,...]},",
        "          \"retries\":R (the producer's record-retry-total),...}",
        "  consume --bootstrap B --topic T [--group G] [--isolation read_committed|read_uncommitted]",
        "          [--expect N] [--timeout-ms MS] [--from-beginning] [--no-records] [--extra k=v]...",
        "      reads until N records (exit 1 when fewer came) or the timeout (default 30000 ms);",
        "      without --group all partitions are assigned (from the beginning with",
        "      --from-beginning, else from the end); with --group the consumer subscribes",
        "      (auto.offset.reset earliest with --from-beginning, else latest) and commits",
        "      synchronously at the end. Without --expect it reads up to the end offsets.",
        "      -> {\"count\":N,\"records\":[{\"p\":0,\"o\":12,\"k\":\"..\",\"v\":\"..\"}],\"duplicates\":D,...}",
        "  cluster --bootstrap B [--group G] [--topic T] [--expect-nodes N --wait-ms MS] [--nodes-only]",
        "          [--extra k=v]...",
        "      the coordinator is that of group G (default kdp-harness-probe, created by an",
        "      offset commit when it does not exist); --expect-nodes waits until every",
        "      bootstrap server reports N brokers; --nodes-only skips coordinator and metadata.",
        "      -> {\"nodes\":[\"host:port\"],\"controller\":\"host:port\",\"coordinator\":\"host:port\",",
        "          \"metadata_nodes\":[...],...}",
        "  create-topic --bootstrap B --topic T [--partitions P] [--replication R] [--config k=v]...",
        "          [--replicas IDS] [--wait-ms MS]",
        "      partitions/replication default to the broker's; an existing topic is fine;",
        "      --replicas places partition i on the i-th ';'-separated list of node ids",
        "      (e.g. 4,1,2;1,2,3; the first id of a list becomes the leader) instead;",
        "      waits (default 30000 ms) until every partition has a leader.",
        "      -> {\"topic\":T,\"created\":true|false,...}",
        "  topic-leader --bootstrap B --topic T [--partition P] [--not ID] [--wait-ms MS]",
        "      with --not/--wait-ms: waits until the partition has a leader other than ID.",
        "      -> {\"leader\":id,\"host\":\"host:port\",\"replicas\":[..],\"isr\":[..]}",
        "  scram-users --bootstrap B --user NAME:PASSWORD... [--wait-ms MS]",
        "      SCRAM-SHA-256 and SCRAM-SHA-512 credentials (4096 iterations) for every user,",
        "      through the Admin API; waits until the cluster describes them.",
        "      -> {\"users\":[NAME,...]}",
        "  acl-allow --bootstrap B --topic T --principal User:NAME --operation OP",
        "      a literal ALLOW ACL for host * (OP: WRITE, READ, DESCRIBE...).",
        "      -> {\"topic\":T,\"principal\":P,\"operation\":OP}");

    // ------------------------------------------------------------------
    // main
    // ------------------------------------------------------------------

    public static void main(String[] argv) {
        if (argv.length == 0 || argv[0].equals("help") || argv[0].equals("--help")) {
            System.err.println(USAGE);
            System.exit(argv.length == 0 ? 2 : 0);
        }
        int code;
        try {
            Args a = new Args(Arrays.copyOfRange(argv, 1, argv.length));
            switch (argv[0]) {
                case "produce": code = produce(a); break;
                case "consume": code = consume(a); break;
                case "cluster": code = cluster(a); break;
                case "create-topic": code = createTopic(a); break;
                case "topic-leader": code = topicLeader(a); break;
                case "scram-users": code = scramUsers(a); break;
                case "acl-allow": code = aclAllow(a); break;
                default: throw new UsageException("unknown command: " + argv[0]);
            }
        } catch (UsageException e) {
            System.err.println("ClientHarness: " + e.getMessage() + " (usage: ClientHarness help)");
            System.out.println(new Json().put("error", e.getMessage()));
            code = 2;
        } catch (Throwable t) {
            Throwable c = unwrap(t);
            System.err.println("ClientHarness: " + describe(c));
            System.out.println(new Json().put("error", describe(c)));
            code = 1;
        }
        System.out.flush();
        // Client threads of a failed run must not keep the JVM alive.
        Runtime.getRuntime().halt(code);
    }

    // ------------------------------------------------------------------
    // produce
    // ------------------------------------------------------------------

    static int produce(Args a) throws Exception {
        String topic = a.required("topic");
        int count = a.intOpt("count", -1);
        if (count < 0) throw new UsageException("--count is required");
        int size = a.intOpt("size", 0);
        int start = a.intOpt("start", 0);
        int thenStart = a.intOpt("then-start", 0);
        int first = count;
        count += a.intOpt("then-count", 0);
        String keyPrefix = a.opt("key-prefix", null);
        String valuePrefix = a.opt("value-prefix", "v");
        Integer partition = a.has("partition") ? Integer.valueOf(a.intOpt("partition", 0)) : null;
        String txId = a.opt("transactional-id", null);
        boolean abort = a.flag("abort");
        double rate = Double.parseDouble(a.opt("rate", "0"));
        if (abort && txId == null) throw new UsageException("--abort needs --transactional-id");

        Properties p = a.clientProps();
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, a.opt("acks", "all"));
        if (a.has("idempotence")) p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, a.opt("idempotence", "true"));
        if (a.has("linger-ms")) p.put(ProducerConfig.LINGER_MS_CONFIG, a.opt("linger-ms", "0"));
        if (txId != null) p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txId);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, a.opt("client-id", "kdp-harness-producer"));
        a.applyExtra(p);

        final long[] offsetOf = new long[count];
        final int[] partitionOf = new int[count];
        Arrays.fill(partitionOf, -1);
        final AtomicInteger acked = new AtomicInteger();
        final AtomicInteger failed = new AtomicInteger();
        final List<String> errors = Collections.synchronizedList(new ArrayList<>());
        String txState = null;
        String fatal = null;
        double retries = -1;
        long t0 = System.nanoTime();
        int sent = 0;

        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p);
        try {
            if (txId != null) {
                producer.initTransactions();
                producer.beginTransaction();
            }
            for (int n = 0; n < count; n++) {
                if (rate > 0) {
                    long due = t0 + (long) (n / rate * 1e9);
                    long wait = due - System.nanoTime();
                    if (wait > 0) Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                }
                final int idx = n;
                int i = n < first ? start + n : thenStart + (n - first);
                byte[] key = keyPrefix == null ? null : (keyPrefix + "-" + i).getBytes(StandardCharsets.UTF_8);
                byte[] value = value(valuePrefix, i, size);
                ProducerRecord<byte[], byte[]> rec = new ProducerRecord<>(topic, partition, key, value);
                producer.send(rec, (md, ex) -> {
                    if (ex == null) {
                        offsetOf[idx] = md.offset();
                        partitionOf[idx] = md.partition();
                        acked.incrementAndGet();
                    } else {
                        failed.incrementAndGet();
                        if (errors.size() < 100) errors.add("record " + idx + ": " + describe(ex));
                    }
                });
                sent++;
            }
            producer.flush();
            retries = producerMetric(producer, "record-retry-total");
            if (txId != null) {
                if (abort) {
                    producer.abortTransaction();
                    txState = "aborted";
                } else {
                    producer.commitTransaction();
                    txState = "committed";
                }
            }
        } catch (Exception e) {
            fatal = describe(unwrap(e));
            if (txId != null) {
                try {
                    producer.abortTransaction();
                    txState = "aborted";
                } catch (Exception e2) {
                    txState = "failed";
                }
            }
        } finally {
            producer.close(Duration.ofSeconds(30));
        }
        long elapsedMs = (System.nanoTime() - t0) / 1_000_000;

        Map<Integer, List<Long>> offsets = new TreeMap<>();
        for (int n = 0; n < count; n++) {
            if (partitionOf[n] >= 0) offsets.computeIfAbsent(partitionOf[n], k -> new ArrayList<>()).add(offsetOf[n]);
        }
        Json offs = new Json();
        for (Map.Entry<Integer, List<Long>> e : offsets.entrySet()) offs.put(String.valueOf(e.getKey()), e.getValue());
        List<String> errs = new ArrayList<>(errors);
        if (fatal != null) errs.add(0, fatal);

        Json out = new Json()
            .put("sent", sent)
            .put("acked", acked.get())
            .put("failed", failed.get())
            .put("errors", errs)
            .put("offsets", offs);
        if (txState != null) out.put("transaction", txState);
        out.put("retries", (long) retries);
        out.put("elapsed_ms", elapsedMs);
        System.out.println(out);
        boolean ok = fatal == null && acked.get() == count;
        return ok ? 0 : 1;
    }

    /** A producer-metrics value (e.g. record-retry-total), -1 when absent. */
    static double producerMetric(KafkaProducer<byte[], byte[]> producer, String name) {
        for (Map.Entry<org.apache.kafka.common.MetricName, ? extends org.apache.kafka.common.Metric> e
                : producer.metrics().entrySet()) {
            if (e.getKey().name().equals(name) && e.getKey().group().equals("producer-metrics")) {
                Object v = e.getValue().metricValue();
                if (v instanceof Number) return ((Number) v).doubleValue();
            }
        }
        return -1;
    }

    static byte[] value(String prefix, int i, int size) {
        StringBuilder sb = new StringBuilder(Math.max(size, 16)).append(prefix).append('-').append(i);
        while (sb.length() < size) sb.append('.');
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    // ------------------------------------------------------------------
    // consume
    // ------------------------------------------------------------------

    static int consume(Args a) throws Exception {
        String topic = a.required("topic");
        String group = a.opt("group", null);
        int expect = a.intOpt("expect", -1);
        long timeoutMs = a.longOpt("timeout-ms", 30000);
        boolean fromBeginning = a.flag("from-beginning");
        boolean printRecords = !a.flag("no-records");

        Properties p = a.clientProps();
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, a.opt("isolation", "read_uncommitted"));
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, fromBeginning ? "earliest" : "latest");
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, a.opt("client-id", "kdp-harness-consumer"));
        if (group != null) p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        a.applyExtra(p);

        List<ConsumerRecord<byte[], byte[]>> records = new ArrayList<>();
        Map<String, Integer> seen = new HashMap<>();
        Map<Integer, Integer> perPartition = new TreeMap<>();
        int duplicates = 0;
        boolean timedOut = false;
        Json committed = null;
        long t0 = System.nanoTime();
        long deadline = System.currentTimeMillis() + timeoutMs;

        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p);
        try {
            final Set<TopicPartition> assigned = Collections.synchronizedSet(new HashSet<>());
            Map<TopicPartition, Long> end = null;
            if (group == null) {
                List<PartitionInfo> infos = waitPartitions(consumer, topic, deadline);
                List<TopicPartition> tps = new ArrayList<>();
                for (PartitionInfo pi : infos) tps.add(new TopicPartition(topic, pi.partition()));
                consumer.assign(tps);
                if (fromBeginning) consumer.seekToBeginning(tps); else consumer.seekToEnd(tps);
                assigned.addAll(tps);
                if (expect < 0) end = consumer.endOffsets(tps);
            } else {
                consumer.subscribe(Collections.singletonList(topic), new ConsumerRebalanceListener() {
                    @Override public void onPartitionsRevoked(Collection<TopicPartition> parts) { assigned.removeAll(parts); }
                    @Override public void onPartitionsAssigned(Collection<TopicPartition> parts) { assigned.addAll(parts); }
                });
            }
            while (true) {
                if (expect >= 0 && records.size() >= expect) break;
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) { timedOut = true; break; }
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(Math.min(left, 200)));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    records.add(r);
                    perPartition.merge(r.partition(), 1, Integer::sum);
                    String v = r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8);
                    if (v != null && seen.merge(v, 1, Integer::sum) > 1) duplicates++;
                }
                if (expect < 0) {
                    Set<TopicPartition> parts;
                    synchronized (assigned) { parts = new HashSet<>(assigned); }
                    if (parts.isEmpty()) continue;
                    if (end == null || !end.keySet().equals(parts)) end = consumer.endOffsets(parts);
                    boolean caughtUp = true;
                    for (TopicPartition tp : parts) {
                        if (consumer.position(tp) < end.get(tp)) { caughtUp = false; break; }
                    }
                    if (caughtUp) break;
                }
            }
            if (group != null) {
                consumer.commitSync(Duration.ofSeconds(30));
                Set<TopicPartition> parts = consumer.assignment();
                Map<TopicPartition, OffsetAndMetadata> c = consumer.committed(parts, Duration.ofSeconds(30));
                Map<Integer, Long> sorted = new TreeMap<>();
                for (Map.Entry<TopicPartition, OffsetAndMetadata> e : c.entrySet()) {
                    if (e.getValue() != null) sorted.put(e.getKey().partition(), e.getValue().offset());
                }
                committed = new Json();
                for (Map.Entry<Integer, Long> e : sorted.entrySet()) committed.put(String.valueOf(e.getKey()), e.getValue());
            }
        } finally {
            consumer.close(Duration.ofSeconds(10));
        }
        long elapsedMs = (System.nanoTime() - t0) / 1_000_000;

        Json out = new Json().put("count", records.size());
        if (printRecords) {
            List<Json> rs = new ArrayList<>(records.size());
            for (ConsumerRecord<byte[], byte[]> r : records) {
                rs.add(new Json()
                    .put("p", r.partition())
                    .put("o", r.offset())
                    .put("k", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8))
                    .put("v", r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8)));
            }
            out.put("records", rs);
        }
        out.put("duplicates", duplicates);
        out.put("distinct", seen.size());
        Json pp = new Json();
        for (Map.Entry<Integer, Integer> e : perPartition.entrySet()) pp.put(String.valueOf(e.getKey()), e.getValue());
        out.put("partitions", pp);
        if (committed != null) out.put("committed", committed);
        out.put("timed_out", timedOut);
        out.put("elapsed_ms", elapsedMs);
        System.out.println(out);
        return (expect >= 0 && records.size() < expect) ? 1 : 0;
    }

    static List<PartitionInfo> waitPartitions(KafkaConsumer<byte[], byte[]> consumer, String topic, long deadline)
            throws InterruptedException {
        while (true) {
            List<PartitionInfo> infos = null;
            try {
                long left = Math.max(1000, deadline - System.currentTimeMillis());
                infos = consumer.partitionsFor(topic, Duration.ofMillis(Math.min(left, 5000)));
            } catch (org.apache.kafka.common.errors.TimeoutException e) {
                // retry until the deadline
            }
            if (infos != null && !infos.isEmpty()) return infos;
            if (System.currentTimeMillis() >= deadline) {
                throw new RuntimeException("topic " + topic + " not found before the timeout");
            }
            Thread.sleep(200);
        }
    }

    // ------------------------------------------------------------------
    // cluster
    // ------------------------------------------------------------------

    static int cluster(Args a) throws Exception {
        String bootstrap = a.required("bootstrap");
        int expectNodes = a.intOpt("expect-nodes", -1);
        long waitMs = a.longOpt("wait-ms", 0);
        long deadline = System.currentTimeMillis() + waitMs;

        if (expectNodes >= 0) {
            // Readiness: every bootstrap server on its own must answer and
            // report the expected number of brokers.
            for (String server : bootstrap.split(",")) {
                waitForNodes(a, server.trim(), expectNodes, deadline);
            }
        }

        Properties p = a.clientProps();
        try (Admin admin = Admin.create(p)) {
            DescribeClusterResult dc = admin.describeCluster();
            List<Node> nodes = new ArrayList<>(dc.nodes().get(30, TimeUnit.SECONDS));
            nodes.sort((x, y) -> Integer.compare(x.id(), y.id()));
            Node controller = dc.controller().get(30, TimeUnit.SECONDS);
            String clusterId = dc.clusterId().get(30, TimeUnit.SECONDS);

            List<String> hosts = new ArrayList<>();
            List<Integer> ids = new ArrayList<>();
            for (Node n : nodes) {
                hosts.add(hostPort(n));
                ids.add(n.id());
            }
            Json out = new Json()
                .put("cluster_id", clusterId)
                .put("nodes", hosts)
                .put("node_ids", ids)
                .put("controller", controller == null || controller.isEmpty() ? null : hostPort(controller))
                .put("controller_id", controller == null || controller.isEmpty() ? null : controller.id());
            if (a.flag("nodes-only")) {
                System.out.println(out);
                return expectNodes >= 0 && nodes.size() != expectNodes ? 1 : 0;
            }

            String group = a.opt("group", "kdp-harness-probe");
            ConsumerGroupDescription gd = describeGroup(admin, group, a.opt("topic", null));
            out.put("group", group)
                .put("coordinator", gd.coordinator() == null ? null : hostPort(gd.coordinator()))
                .put("coordinator_id", gd.coordinator() == null ? null : gd.coordinator().id());

            // What a plain client learns from Metadata responses (a consumer's
            // partitionsFor/listTopics; Admin.describeCluster may use the
            // DescribeCluster API instead).
            Properties cp = a.clientProps();
            cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            Set<String> metaNodes = new java.util.TreeSet<>();
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
                String topic = a.opt("topic", null);
                Map<String, List<PartitionInfo>> topics = new TreeMap<>();
                if (topic != null) {
                    topics.put(topic, consumer.partitionsFor(topic, Duration.ofSeconds(30)));
                } else {
                    topics.putAll(consumer.listTopics(Duration.ofSeconds(30)));
                }
                List<Json> parts = new ArrayList<>();
                for (Map.Entry<String, List<PartitionInfo>> e : topics.entrySet()) {
                    if (e.getValue() == null) continue;
                    for (PartitionInfo pi : e.getValue()) {
                        if (pi.leader() != null && !pi.leader().isEmpty()) metaNodes.add(hostPort(pi.leader()));
                        if (pi.replicas() != null) {
                            for (Node r : pi.replicas()) if (r != null && !r.isEmpty()) metaNodes.add(hostPort(r));
                        }
                        if (topic != null) {
                            parts.add(new Json()
                                .put("p", pi.partition())
                                .put("leader", pi.leader() == null || pi.leader().isEmpty() ? null : hostPort(pi.leader()))
                                .put("replicas", hostPorts(pi.replicas()))
                                .put("isr", hostPorts(pi.inSyncReplicas())));
                        }
                    }
                }
                out.put("metadata_nodes", new ArrayList<>(metaNodes));
                if (topic != null) out.put("partitions", parts);
            }
            System.out.println(out);
            return expectNodes >= 0 && nodes.size() != expectNodes ? 1 : 0;
        }
    }

    /**
     * The group's description, with its coordinator. Kafka 4 answers
     * GroupIdNotFound for a group that does not exist (3.9 describes it as
     * Dead): then the group is created by committing an offset for it (a
     * "simple" group: no member joins) and described again.
     */
    static ConsumerGroupDescription describeGroup(Admin admin, String group, String topic) throws Exception {
        try {
            return admin.describeConsumerGroups(Collections.singletonList(group))
                .describedGroups().get(group).get(30, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof GroupIdNotFoundException)) throw e;
        }
        TopicPartition tp = new TopicPartition(topic != null ? topic : "__consumer_offsets", 0);
        admin.alterConsumerGroupOffsets(group, Collections.singletonMap(tp, new OffsetAndMetadata(0)))
            .all().get(30, TimeUnit.SECONDS);
        return admin.describeConsumerGroups(Collections.singletonList(group))
            .describedGroups().get(group).get(30, TimeUnit.SECONDS);
    }

    static void waitForNodes(Args a, String server, int expect, long deadline) throws Exception {
        Properties p = a.clientProps();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, server);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        String last = "no answer";
        try (Admin admin = Admin.create(p)) {
            while (true) {
                try {
                    int n = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                    if (n == expect) return;
                    last = n + " broker(s)";
                } catch (Exception e) {
                    last = describe(unwrap(e));
                }
                if (System.currentTimeMillis() >= deadline) {
                    throw new RuntimeException(server + " does not report " + expect + " brokers: " + last);
                }
                Thread.sleep(250);
            }
        }
    }

    // ------------------------------------------------------------------
    // create-topic
    // ------------------------------------------------------------------

    static int createTopic(Args a) throws Exception {
        String topic = a.required("topic");
        int partitions = a.intOpt("partitions", -1);
        int replication = a.intOpt("replication", -1);
        long deadline = System.currentTimeMillis() + a.longOpt("wait-ms", 30000);
        Map<String, String> configs = new LinkedHashMap<>();
        for (String kv : a.all("config")) {
            int eq = kv.indexOf('=');
            if (eq <= 0) throw new UsageException("--config needs key=value: " + kv);
            configs.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        boolean created = true;
        try (Admin admin = Admin.create(a.clientProps())) {
            NewTopic nt;
            String placement = a.opt("replicas", null);
            if (placement != null) {
                Map<Integer, List<Integer>> assignment = new LinkedHashMap<>();
                for (String part : placement.split(";")) {
                    List<Integer> ids = new ArrayList<>();
                    for (String id : part.split(",")) ids.add(Integer.parseInt(id.trim()));
                    assignment.put(assignment.size(), ids);
                }
                nt = new NewTopic(topic, assignment);
            } else {
                // -1: the broker's num.partitions / default.replication.factor
                nt = new NewTopic(topic,
                    partitions > 0 ? Optional.of(partitions) : Optional.<Integer>empty(),
                    replication > 0 ? Optional.of((short) replication) : Optional.<Short>empty());
            }
            if (!configs.isEmpty()) nt.configs(configs);
            try {
                admin.createTopics(Collections.singletonList(nt)).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
                created = false;
            }
            // wait until every partition has a leader
            TopicDescription td;
            while (true) {
                td = null;
                try {
                    td = admin.describeTopics(Collections.singletonList(topic)).allTopicNames()
                        .get(10, TimeUnit.SECONDS).get(topic);
                } catch (ExecutionException e) {
                    // UnknownTopicOrPartition right after creation: retry
                }
                if (td != null && allLeaders(td)) break;
                if (System.currentTimeMillis() >= deadline) {
                    throw new RuntimeException("topic " + topic + " has no leader for every partition yet");
                }
                Thread.sleep(100);
            }
            System.out.println(new Json()
                .put("topic", topic)
                .put("created", created)
                .put("partitions", td.partitions().size())
                .put("replication", td.partitions().get(0).replicas().size()));
        }
        return 0;
    }

    static boolean allLeaders(TopicDescription td) {
        if (td.partitions().isEmpty()) return false;
        for (TopicPartitionInfo pi : td.partitions()) {
            if (pi.leader() == null || pi.leader().isEmpty()) return false;
        }
        return true;
    }

    // ------------------------------------------------------------------
    // scram-users / acl-allow
    // ------------------------------------------------------------------

    static int scramUsers(Args a) throws Exception {
        List<String> users = a.all("user");
        if (users.isEmpty()) throw new UsageException("--user NAME:PASSWORD is required");
        long deadline = System.currentTimeMillis() + a.longOpt("wait-ms", 30000);
        // One request per mechanism: a request may alter each user once.
        List<List<org.apache.kafka.clients.admin.UserScramCredentialAlteration>> perMechanism = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (org.apache.kafka.clients.admin.ScramMechanism m : Arrays.asList(
                org.apache.kafka.clients.admin.ScramMechanism.SCRAM_SHA_256,
                org.apache.kafka.clients.admin.ScramMechanism.SCRAM_SHA_512)) {
            List<org.apache.kafka.clients.admin.UserScramCredentialAlteration> changes = new ArrayList<>();
            for (String u : users) {
                int colon = u.indexOf(':');
                if (colon <= 0) throw new UsageException("--user needs NAME:PASSWORD: " + u);
                String name = u.substring(0, colon);
                if (!names.contains(name)) names.add(name);
                changes.add(new org.apache.kafka.clients.admin.UserScramCredentialUpsertion(
                    name, new org.apache.kafka.clients.admin.ScramCredentialInfo(m, 4096),
                    u.substring(colon + 1)));
            }
            perMechanism.add(changes);
        }
        try (Admin admin = Admin.create(a.clientProps())) {
            for (List<org.apache.kafka.clients.admin.UserScramCredentialAlteration> changes : perMechanism) {
                admin.alterUserScramCredentials(changes).all().get(30, TimeUnit.SECONDS);
            }
            while (true) {
                Map<String, org.apache.kafka.clients.admin.UserScramCredentialsDescription> d =
                    admin.describeUserScramCredentials(names).all().get(30, TimeUnit.SECONDS);
                boolean all = true;
                for (String n : names) {
                    org.apache.kafka.clients.admin.UserScramCredentialsDescription ud = d.get(n);
                    if (ud == null || ud.credentialInfos().size() < 2) all = false;
                }
                if (all) break;
                if (System.currentTimeMillis() >= deadline) {
                    throw new RuntimeException("SCRAM credentials not visible in time: " + names);
                }
                Thread.sleep(100);
            }
        }
        System.out.println(new Json().put("users", names));
        return 0;
    }

    static int aclAllow(Args a) throws Exception {
        String topic = a.required("topic");
        String principal = a.required("principal");
        String op = a.required("operation");
        org.apache.kafka.common.acl.AclBinding binding = new org.apache.kafka.common.acl.AclBinding(
            new org.apache.kafka.common.resource.ResourcePattern(
                org.apache.kafka.common.resource.ResourceType.TOPIC, topic,
                org.apache.kafka.common.resource.PatternType.LITERAL),
            new org.apache.kafka.common.acl.AccessControlEntry(principal, "*",
                org.apache.kafka.common.acl.AclOperation.fromString(op),
                org.apache.kafka.common.acl.AclPermissionType.ALLOW));
        try (Admin admin = Admin.create(a.clientProps())) {
            admin.createAcls(Collections.singletonList(binding)).all().get(30, TimeUnit.SECONDS);
        }
        System.out.println(new Json().put("topic", topic).put("principal", principal).put("operation", op));
        return 0;
    }

    // ------------------------------------------------------------------
    // topic-leader
    // ------------------------------------------------------------------

    static int topicLeader(Args a) throws Exception {
        String topic = a.required("topic");
        int partition = a.intOpt("partition", 0);
        int not = a.intOpt("not", Integer.MIN_VALUE);
        long deadline = System.currentTimeMillis() + a.longOpt("wait-ms", 0);
        Properties p = a.clientProps();
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        try (Admin admin = Admin.create(p)) {
            String last;
            while (true) {
                try {
                    TopicDescription td = admin.describeTopics(Collections.singletonList(topic)).allTopicNames()
                        .get(15, TimeUnit.SECONDS).get(topic);
                    TopicPartitionInfo pi = null;
                    for (TopicPartitionInfo x : td.partitions()) if (x.partition() == partition) pi = x;
                    if (pi == null) throw new UsageException("topic " + topic + " has no partition " + partition);
                    Node leader = pi.leader();
                    boolean has = leader != null && !leader.isEmpty();
                    if (has && leader.id() != not) {
                        System.out.println(new Json()
                            .put("leader", leader.id())
                            .put("host", hostPort(leader))
                            .put("replicas", ids(pi.replicas()))
                            .put("isr", ids(pi.isr())));
                        return 0;
                    }
                    last = has ? "leader is still " + leader.id() : "no leader";
                } catch (ExecutionException e) {
                    last = describe(unwrap(e));
                }
                if (System.currentTimeMillis() >= deadline) {
                    System.out.println(new Json().put("leader", null).put("error", last));
                    return 1;
                }
                Thread.sleep(200);
            }
        }
    }

    // ------------------------------------------------------------------
    // helpers
    // ------------------------------------------------------------------

    static String hostPort(Node n) {
        return n.host() + ":" + n.port();
    }

    static List<String> hostPorts(Node[] nodes) {
        List<String> out = new ArrayList<>();
        if (nodes != null) for (Node n : nodes) if (n != null && !n.isEmpty()) out.add(hostPort(n));
        return out;
    }

    static List<Integer> ids(List<Node> nodes) {
        List<Integer> out = new ArrayList<>();
        for (Node n : nodes) out.add(n.id());
        return out;
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof ExecutionException || t instanceof java.util.concurrent.CompletionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    static String describe(Throwable t) {
        String m = t.getMessage();
        return t.getClass().getSimpleName() + (m == null ? "" : ": " + m);
    }

    static final class UsageException extends RuntimeException {
        UsageException(String m) { super(m); }
    }

    /** --name value options; a few are flags without a value; some repeat. */
    static final class Args {
        static final Set<String> FLAGS = new HashSet<>(Arrays.asList("abort", "from-beginning", "no-records", "nodes-only"));
        final Map<String, List<String>> opts = new LinkedHashMap<>();

        Args(String[] argv) {
            for (int i = 0; i < argv.length; i++) {
                String s = argv[i];
                if (!s.startsWith("--") || s.length() < 3) throw new UsageException("unexpected argument: " + s);
                String name = s.substring(2);
                String val;
                int eq = name.indexOf('=');
                if (eq > 0) {
                    val = name.substring(eq + 1);
                    name = name.substring(0, eq);
                } else if (FLAGS.contains(name)) {
                    val = "true";
                } else {
                    if (i + 1 >= argv.length) throw new UsageException("--" + name + " needs a value");
                    val = argv[++i];
                }
                opts.computeIfAbsent(name, k -> new ArrayList<>()).add(val);
            }
        }

        boolean has(String n) { return opts.containsKey(n); }
        boolean flag(String n) { return has(n) && !"false".equals(opt(n, "true")); }
        List<String> all(String n) { return opts.getOrDefault(n, Collections.emptyList()); }

        String opt(String n, String def) {
            List<String> v = opts.get(n);
            return v == null ? def : v.get(v.size() - 1);
        }

        String required(String n) {
            String v = opt(n, null);
            if (v == null) throw new UsageException("--" + n + " is required");
            return v;
        }

        int intOpt(String n, int def) {
            String v = opt(n, null);
            try {
                return v == null ? def : Integer.parseInt(v);
            } catch (NumberFormatException e) {
                throw new UsageException("--" + n + " needs a number: " + v);
            }
        }

        long longOpt(String n, long def) {
            String v = opt(n, null);
            try {
                return v == null ? def : Long.parseLong(v);
            } catch (NumberFormatException e) {
                throw new UsageException("--" + n + " needs a number: " + v);
            }
        }

        Properties clientProps() {
            Properties p = new Properties();
            p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, required("bootstrap"));
            if (has("client-id")) p.put(AdminClientConfig.CLIENT_ID_CONFIG, opt("client-id", ""));
            applyExtra(p);  // again after the command's own defaults, to win over them
            return p;
        }

        void applyExtra(Properties p) {
            for (String kv : all("extra")) {
                int eq = kv.indexOf('=');
                if (eq <= 0) throw new UsageException("--extra needs key=value: " + kv);
                p.put(kv.substring(0, eq), kv.substring(eq + 1));
            }
        }
    }

    /** A JSON object, written by hand (no library): insertion-ordered keys. */
    static final class Json {
        final Map<String, Object> fields = new LinkedHashMap<>();

        Json put(String k, Object v) {
            fields.put(k, v);
            return this;
        }

        @Override public String toString() {
            StringBuilder sb = new StringBuilder();
            write(sb, this);
            return sb.toString();
        }

        static void write(StringBuilder sb, Object v) {
            if (v == null) {
                sb.append("null");
            } else if (v instanceof Json) {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<String, Object> e : ((Json) v).fields.entrySet()) {
                    if (!first) sb.append(',');
                    first = false;
                    string(sb, e.getKey());
                    sb.append(':');
                    write(sb, e.getValue());
                }
                sb.append('}');
            } else if (v instanceof Collection) {
                sb.append('[');
                boolean first = true;
                for (Object o : (Collection<?>) v) {
                    if (!first) sb.append(',');
                    first = false;
                    write(sb, o);
                }
                sb.append(']');
            } else if (v instanceof Number || v instanceof Boolean) {
                sb.append(v);
            } else {
                string(sb, v.toString());
            }
        }

        static void string(StringBuilder sb, String s) {
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                        else sb.append(c);
                }
            }
            sb.append('"');
        }
    }
}
