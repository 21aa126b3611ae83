#!/usr/bin/env python3
"""Structural checks of the Helm chart's rendered manifests, for scripts/check-helm.

    python3 scripts/lib/helm_checks.py <check> <args...>

One subcommand per check (cmd_<check> below, dashes for underscores): each
reads rendered manifests (helm template output) or chart files and asserts
what the chart promises; on failure it prints one line naming the assertion
and exits 1. PyYAML and jsonschema come with kubernetes-validate, which
scripts/check-helm installs.
"""
import json
import re
import sys

import yaml

RELEASE, NAMESPACE = "rel", "kafka"
FULLNAME = f"{RELEASE}-kafka-dedup-proxy"
SELECTOR = {"app.kubernetes.io/name": "kafka-dedup-proxy", "app.kubernetes.io/instance": RELEASE}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
METRICS = [
    "kdp_connections_active", "kdp_connections_total", "kdp_requests_total",
    "kdp_upstream_request_duration_seconds", "kdp_produce_batches_total",
    "kdp_dedup_bytes_saved_total", "kdp_dedup_cache_entries", "kdp_dedup_cache_capacity",
    "kdp_dedup_cache_evictions_total", "kdp_frame_errors_total", "kdp_broker_listeners",
    "kdp_upstream_up", "kdp_connections_rejected_total",
    "kdp_key_dedup_records_total", "kdp_key_dedup_batches_total", "kdp_key_dedup_keys",
    "kdp_key_dedup_evictions_total", "kdp_key_dedup_producer_lines",
    "kdp_key_dedup_producer_line_evictions_total",
    "kdp_store_up", "kdp_store_errors_total", "kdp_store_fallbacks_total",
    "kdp_store_request_duration_seconds",
]
STORE_ENV = {"KDP_DEDUP_STORE", "KDP_DEDUP_STORE_TIMEOUT_MS", "KDP_KEY_DEDUP_ON_STORE_ERROR",
             "KDP_DEDUP_STORE_PASSWORD", "KDP_DEDUP_STORE_PASSWORD_FILE"}
STORE_ALERTS = ["KafkaDedupProxyStoreDown", "KafkaDedupProxyStoreFallbacks", "KafkaDedupProxyStoreSlow"]


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def args_of(container):
    out = {}
    for a in container["args"]:
        k, _, v = a.partition("=")
        out[k] = v
    return out


def check_common(docs):
    for d in docs:
        md = d["metadata"]
        where = f'{d["kind"]}/{md["name"]}'
        assert md.get("namespace") == NAMESPACE, f"{where}: namespace {md.get('namespace')}"
        for k, v in SELECTOR.items():
            assert md["labels"].get(k) == v, f"{where}: label {k}"
        assert md["labels"].get("app.kubernetes.io/version") == "0.1.0", f"{where}: version label"


def check_workload(docs, replicas, ports, flags, advertised, grace):
    """Deployment and Service agree with each other and with the values."""
    check_common(docs)
    dep, svc = one(docs, "Deployment"), one(docs, "Service")
    spec = dep["spec"]
    assert spec["replicas"] == replicas, spec["replicas"]
    assert spec["selector"]["matchLabels"] == SELECTOR
    pod = spec["template"]
    for k, v in SELECTOR.items():
        assert pod["metadata"]["labels"][k] == v
    ps = pod["spec"]
    (c,) = [c for c in ps["containers"] if c["name"] == "proxy"]
    a = args_of(c)
    want = dict(flags)
    want["--advertised-host"] = advertised
    for k, v in want.items():
        assert a.get(k) == v, f"{k}: {a.get(k)!r} != {v!r}"
    for flag in ["--upstream", "--listen", "--advertised-host", "--broker-port-base",
                 "--metrics-listen", "--max-frame-bytes", "--max-connections", "--dedup-mode",
                 "--dedup-window", "--cache-max-producer-partitions", "--cache-idle-ttl-seconds",
                 "--shutdown-grace-seconds", "--upstream-connect-timeout-ms",
                 "--upstream-probe-interval-seconds", "--log-level", "--log-format"]:
        assert flag in a, f"missing {flag}"
    cports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert cports == ports, f"container ports {cports} != {ports}"
    sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert sports == {n: (p, n) for n, p in ports.items()}, f"service ports {sports}"
    assert svc["spec"]["selector"] == SELECTOR
    assert a["--listen"].endswith(f':{ports["bootstrap"]}')
    assert a["--metrics-listen"].endswith(f':{ports["metrics"]}')
    base = int(a["--broker-port-base"])
    for n, p in ports.items():
        if n.startswith("broker-"):
            assert p == base + int(n[len("broker-"):]), f"{n} on {p}, base {base}"
    # probes on the metrics port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # non-root, read-only, no capabilities, RuntimeDefault seccomp
    sc, psc = c["securityContext"], ps["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert psc["runAsNonRoot"] and psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert ps["automountServiceAccountToken"] is False
    assert ps["serviceAccountName"] == FULLNAME
    tgps = ps["terminationGracePeriodSeconds"]
    assert tgps == grace and tgps > int(a["--shutdown-grace-seconds"]), tgps
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == FULLNAME and sa["automountServiceAccountToken"] is False
    return dep, svc, c


def cmd_default(path):
    docs = load(path)
    assert kinds(docs) == ["Deployment", "Service", "ServiceAccount"], kinds(docs)
    flags = {
        "--upstream": "kafka:9092", "--listen": "0.0.0.0:9092", "--broker-port-base": "9093",
        "--metrics-listen": "0.0.0.0:9400", "--max-frame-bytes": "104857600",
        "--max-connections": "10000", "--dedup-mode": "on", "--dedup-window": "5",
        "--cache-max-producer-partitions": "1000000", "--cache-idle-ttl-seconds": "900",
        "--shutdown-grace-seconds": "30", "--upstream-connect-timeout-ms": "10000",
        "--upstream-probe-interval-seconds": "10", "--log-level": "info", "--log-format": "text",
    }
    ports = {"bootstrap": 9092, "broker-0": 9093, "broker-1": 9094, "broker-2": 9095, "metrics": 9400}
    dep, svc, c = check_workload(docs, 1, ports, flags, f"{FULLNAME}.{NAMESPACE}.svc", 45)
    assert "--broker-address-map" not in args_of(c), "empty --broker-address-map passed"
    assert not any(k.startswith("--key-dedup") for k in args_of(c)), "key dedup is off by default"
    assert "--worker-threads" not in args_of(c), "the runtime sizes itself by default"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert c["image"] == "kafka-dedup-proxy:0.1.0", c["image"]
    assert "resources" not in c
    s = dep["spec"]["strategy"]
    assert s["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, s


def cmd_full(path, dashboard):
    docs = load(path)
    assert kinds(docs) == ["ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget",
                           "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"], kinds(docs)
    flags = {
        "--upstream": "kafka-0.kafka-headless.kafka.svc:9092,kafka-1.kafka-headless.kafka.svc:9092",
        "--listen": "0.0.0.0:19092", "--broker-port-base": "19100",
        "--metrics-listen": "0.0.0.0:9400", "--max-frame-bytes": "52428800",
        "--max-connections": "20000", "--dedup-mode": "observe", "--dedup-window": "8",
        "--cache-max-producer-partitions": "250000", "--cache-idle-ttl-seconds": "600",
        "--shutdown-grace-seconds": "20", "--upstream-connect-timeout-ms": "5000",
        "--upstream-probe-interval-seconds": "5", "--log-level": "kafka_dedup_proxy=debug,info",
        "--broker-address-map": "kafka-1.example.com:9094=kafka-0.kafka-headless.kafka.svc:9092,"
                                "kafka-2.example.com:9094=kafka-1.kafka-headless.kafka.svc:9092",
        "--log-format": "json",
        "--key-dedup-topics": "orders-*,payments", "--key-dedup-source": "key",
        "--key-dedup-window-seconds": "900", "--key-dedup-max-keys": "2000000",
        "--key-dedup-rules": "/etc/kdp/key-dedup/rules.toml",
        "--worker-threads": "2",
    }
    ports = {"bootstrap": 19092, "metrics": 9400}
    ports.update({f"broker-{i}": 19100 + i for i in range(1, 6)})
    dep, svc, c = check_workload(docs, 3, ports, flags, "kafka-proxy.example.com", 40)
    assert c["image"] == "registry.example.com/platform/kafka-dedup-proxy:0.1.0"
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert {"name": "RUST_BACKTRACE", "value": "1"} in c["env"]
    env = env_of(c)
    assert env["KDP_DEDUP_STORE"] == ("redis+cluster://redis-0.redis.kafka.svc:6379,"
                                      "redis-1.redis.kafka.svc:6379,redis-2.redis.kafka.svc:6379"), env
    assert env["KDP_DEDUP_STORE_TIMEOUT_MS"] == "100" and env["KDP_KEY_DEDUP_ON_STORE_ERROR"] == "fail"
    assert env["KDP_DEDUP_STORE_PASSWORD_FILE"] == "/etc/kdp/store/redis-password", env
    ps = dep["spec"]["template"]["spec"]
    check_key_dedup_rules(docs, dep, c)
    hard = ps["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert hard[0]["labelSelector"]["matchLabels"] == SELECTOR
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert all("nodePort" not in p for p in svc["spec"]["ports"])


def check_key_dedup_rules(docs, dep, c):
    """proxy.keyDedup.rules: a ConfigMap whose rules.toml parses to the rules,
    mounted where --key-dedup-rules points, and a checksum that rolls pods."""
    import tomllib
    name = f"{FULLNAME}-key-dedup-rules"
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    rules = tomllib.loads(cm["data"]["rules.toml"])
    assert rules == {"rule": [{"topics": ["events-*"], "source": "content"},
                              {"topics": ["audit", "audit-*"], "source": "header:audit-id"}]}, rules
    ps = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in ps["volumes"]}
    assert vols["key-dedup-rules"]["configMap"]["name"] == name, vols
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["key-dedup-rules"] == "/etc/kdp/key-dedup", mounts
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert len(ann["checksum/key-dedup-rules"]) == 64, ann


def env_of(container):
    """The container's env as {name: value, or the valueFrom object}."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def proxy_container(docs):
    dep = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == FULLNAME]
    assert len(dep) == 1, "no proxy Deployment"
    (c,) = [c for c in dep[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "proxy"]
    return dep[0], c


def alerts_of(docs):
    return [r["alert"] for d in docs if d["kind"] == "PrometheusRule"
            for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r]


def cmd_store_off(path):
    """No store: no store variable, Secret reference, volume, demo Redis or store alert."""
    docs = load(path)
    dep, c = proxy_container(docs)
    assert not STORE_ENV & set(env_of(c)), f"store env without a store: {STORE_ENV & set(env_of(c))}"
    text = yaml.safe_dump(dep)
    assert "secretKeyRef" not in text and "/etc/kdp/store" not in text and "store-password" not in text
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")], "demo Redis rendered"
    assert not set(alerts_of(docs)) & set(STORE_ALERTS), "store alerts without a store"


def cmd_store(path, password_from, url, timeout_ms, policy):
    """A store: its env, the password from the Secret (mounted file or env),
    3 replicas, a PodDisruptionBudget, a preferred anti-affinity on the host
    name and the store alerts."""
    docs = load(path)
    dep, c = proxy_container(docs)
    env = env_of(c)
    assert env["KDP_DEDUP_STORE"] == url, env
    assert env["KDP_DEDUP_STORE_TIMEOUT_MS"] == timeout_ms, env
    assert env["KDP_KEY_DEDUP_ON_STORE_ERROR"] == policy, env
    assert not any(a.startswith("--dedup-store") for a in c["args"]), "store settings on the command line"
    ps = dep["spec"]["template"]["spec"]
    if password_from == "file":
        assert env["KDP_DEDUP_STORE_PASSWORD_FILE"] == "/etc/kdp/store/password", env
        assert "KDP_DEDUP_STORE_PASSWORD" not in env
        (m,) = [m for m in c["volumeMounts"] if m["name"] == "store-password"]
        assert m == {"name": "store-password", "mountPath": "/etc/kdp/store", "readOnly": True}, m
        (v,) = [v for v in ps["volumes"] if v["name"] == "store-password"]
        assert v["secret"]["secretName"] == "redis-auth", v
    else:
        assert env["KDP_DEDUP_STORE_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}, env
        assert "KDP_DEDUP_STORE_PASSWORD_FILE" not in env
        assert "store-password" not in yaml.safe_dump(dep), "Secret mounted with passwordFrom env"
    assert dep["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"] == SELECTOR
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    (term,) = ps["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == SELECTOR
    alerts = {r["alert"]: r for d in docs if d["kind"] == "PrometheusRule"
              for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r}
    for name in STORE_ALERTS:
        assert name in alerts, f"no {name}"
    sel = f'job="{FULLNAME}", namespace="{NAMESPACE}"'
    assert alerts["KafkaDedupProxyStoreDown"]["expr"] == f"kdp_store_up{{{sel}}} == 0"
    assert alerts["KafkaDedupProxyStoreDown"]["for"] == "2m"
    assert "kdp_store_fallbacks_total" in alerts["KafkaDedupProxyStoreFallbacks"]["expr"]
    slow = alerts["KafkaDedupProxyStoreSlow"]["expr"]
    assert "kdp_store_request_duration_seconds_bucket" in slow
    assert float(slow.rsplit(">", 1)[1]) == int(timeout_ms) / 1000, slow
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")], "demo Redis rendered"


def cmd_demo_redis(path):
    """The demo Redis: a Deployment and a Service the proxy points at, whose
    pods neither the proxy's Deployment nor its Service select, with the
    password from the store's Secret."""
    docs = load(path)
    name = f"{FULLNAME}-redis"
    dep = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    assert len(dep) == 1 and len(svc) == 1, "no demo Redis Deployment and Service"
    dep, svc = dep[0], svc[0]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in SELECTOR.items()), "the proxy's selector matches Redis pods"
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert all(pod_labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())
    assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
    (r,) = dep["spec"]["template"]["spec"]["containers"]
    assert r["args"][r["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)", r["args"]
    assert env_of(r)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert r["securityContext"]["readOnlyRootFilesystem"] is True
    _, c = proxy_container(docs)
    assert env_of(c)["KDP_DEDUP_STORE"] == f"redis://{name}.{NAMESPACE}.svc:6379", env_of(c)


def cmd_pdb(path):
    docs = load(path)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for k, v in pdb["spec"]["selector"]["matchLabels"].items():
        assert labels.get(k) == v, k


def cmd_pdb_default(path):
    pdb = one(load(path), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}, pdb["spec"]


def cmd_servicemonitor(path):
    docs = load(path)
    sm, svc = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    spec = sm["spec"]
    assert set(spec) <= {"endpoints", "namespaceSelector", "selector", "jobLabel"}, set(spec)
    (ep,) = spec["endpoints"]
    svc_ports = [p["name"] for p in svc["spec"]["ports"]]
    assert ep["port"] in svc_ports, f'{ep["port"]} not in {svc_ports}'
    assert ep["path"] == "/metrics"
    assert DURATION.match(ep["interval"]) and DURATION.match(ep["scrapeTimeout"])
    assert isinstance(ep["honorLabels"], bool)
    for r in ep["metricRelabelings"]:
        assert r["action"] in ("drop", "keep", "replace", "labeldrop", "labelkeep", "labelmap")
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    for k, v in spec["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"].get(k) == v, f"Service lacks label {k}"


def cmd_prometheusrule(path):
    docs = load(path)
    pr = one(docs, "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pr) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(pr["spec"]) == {"groups"}
    (group,) = pr["spec"]["groups"]
    assert group["name"] and set(group) <= {"name", "interval", "rules"}
    alerts = {}
    for r in group["rules"]:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, set(r)
        assert isinstance(r["expr"], str) and r["expr"].strip()
        assert DURATION.match(r["for"]), r["for"]
        assert r["labels"]["severity"] and r["annotations"]["summary"]
        alerts[r["alert"]] = r
    builtin = ["KafkaDedupProxyDown", "KafkaDedupProxyUpstreamUnreachable",
               "KafkaDedupProxyDuplicateSurge", "KafkaDedupProxyCacheSaturation",
               "KafkaDedupProxyKeysEvictedEarly"] + STORE_ALERTS
    assert list(alerts) == builtin + ["KafkaDedupProxyFrameErrors"], list(alerts)
    sel = f'job="{FULLNAME}", namespace="{NAMESPACE}"'
    a = alerts
    assert a["KafkaDedupProxyDown"]["expr"] == f"up{{{sel}}} == 0"
    assert a["KafkaDedupProxyUpstreamUnreachable"]["expr"] == f"kdp_upstream_up{{{sel}}} == 0"
    assert a["KafkaDedupProxyUpstreamUnreachable"]["for"] == "2m"
    assert 'outcome="duplicate"' in a["KafkaDedupProxyDuplicateSurge"]["expr"]
    assert a["KafkaDedupProxyDuplicateSurge"]["expr"].endswith("> 250")
    assert "kdp_dedup_cache_entries" in a["KafkaDedupProxyCacheSaturation"]["expr"]
    assert a["KafkaDedupProxyCacheSaturation"]["expr"].endswith("> 0.85")
    assert 'reason="capacity"' in a["KafkaDedupProxyKeysEvictedEarly"]["expr"]
    assert a["KafkaDedupProxyStoreDown"]["expr"] == f"kdp_store_up{{{sel}}} == 0"
    assert a["KafkaDedupProxyStoreSlow"]["expr"].endswith("> 0.1"), "store.timeoutMs 100 as the threshold"
    for name in builtin:
        assert a[name]["labels"]["team"] == "streaming", name
        assert "{{ $labels." in a[name]["annotations"]["description"], name


def cmd_extract_rules(path, rules_out):
    """The PrometheusRule's spec as a Prometheus rule file, for promtool."""
    prs = [d for d in load(path) if d["kind"] == "PrometheusRule"]
    groups = [g for pr in prs for g in pr["spec"]["groups"]]
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)


def cmd_dashboard_configmap(path, dashboard):
    (cm,) = [d for d in load(path) if d["kind"] == "ConfigMap"
             and d["metadata"]["name"] == f"{FULLNAME}-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Kafka"}
    (key,) = cm["data"]
    assert key.endswith(".json")
    assert cm["data"][key].rstrip("\n") == open(dashboard).read().rstrip("\n"), "ConfigMap differs from the dashboard file"


def cmd_absent(path, kind, name_suffix=""):
    docs = [d for d in load(path) if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert not docs, f"{kind} rendered although disabled"


def cmd_nodeport(path):
    svc = one(load(path), "Service")
    assert svc["spec"]["type"] == "NodePort"
    for p in svc["spec"]["ports"]:
        if p["name"] == "metrics":
            assert "nodePort" not in p
        else:
            assert p["nodePort"] == p["port"], p


def cmd_sni(path):
    """SNI routing: the Service and the container expose the bootstrap port
    only; the pattern reaches the proxy with $(nodeId) escaped from
    Kubernetes' variable expansion."""
    docs = load(path)
    svc = one(docs, "Service")
    assert sorted(p["name"] for p in svc["spec"]["ports"]) == ["bootstrap", "metrics"], svc["spec"]["ports"]
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["bootstrap", "metrics"], container["ports"]
    args = args_of(container)
    assert args["--sni-routing"] == "broker-$$(nodeId).kafka.example.com", args
    assert args["--sni-bootstrap"] == "bootstrap.kafka.example.com", args
    assert "--sni-advertised-port" not in args, args


def cmd_sni_port(path):
    """SNI routing behind a passthrough on 443: the proxy advertises 443,
    the Service keeps the proxy's own port."""
    docs = load(path)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert args_of(container)["--sni-advertised-port"] == "443", args_of(container)
    svc = one(docs, "Service")
    assert [p["port"] for p in svc["spec"]["ports"] if p["name"] == "bootstrap"] == [9092], svc


def cmd_core_only(path, out):
    docs = [d for d in load(path) if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    with open(out, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


def cmd_dashboard(path, queries_out):
    d = json.load(open(path))
    assert d["uid"] == "kafka-dedup-proxy" and d["title"]
    assert d["templating"]["list"][0]["type"] == "datasource"
    ids, titles, exprs = set(), [], []
    for p in d["panels"]:
        assert p["id"] not in ids, f'duplicate panel id {p["id"]}'
        ids.add(p["id"])
        titles.append(p["title"])
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            exprs.append(t["expr"])
    for want in ["Duplicates absorbed per second", "Bytes kept from brokers", "Produce batches by outcome",
                 "Requests by API", "Upstream latency p50 / p99", "Active connections",
                 "Cache entries vs capacity", "Cache evictions", "Frame errors", "Upstream up",
                 "Keyed records by outcome", "Idempotency keys held and evicted",
                 "Idempotent producers followed",
                 "Store up", "Store latency p50 / p99", "Store errors", "Decided without the store"]:
        assert want in titles, f"no panel {want!r}"
    text = "\n".join(exprs)
    for m in METRICS:
        assert m in text, f"{m} is on no panel"
    for m in set(re.findall(r"\bkdp_[a-z_]+", text)):
        assert re.sub(r"_(bucket|sum|count)$", "", m) in METRICS, f"unknown metric {m}"
    # Grafana variables replaced by values promtool can parse.
    subst = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m",
             "$job": ".*", "$namespace": ".*", "$pod": ".*"}
    rules = []
    for i, e in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, e
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    with open(queries_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)


def cmd_notes(path, *needles):
    notes = yaml.safe_load(open(path))["data"]["NOTES.txt"]
    for n in needles:
        assert n in notes, f"NOTES lack {n!r}:\n{notes}"


def cmd_chart(path):
    c = yaml.safe_load(open(path))
    assert c["apiVersion"] == "v2" and c["name"] == "kafka-dedup-proxy"
    assert c["version"] == "0.1.0" and str(c["appVersion"]) == "0.1.0", (c["version"], c["appVersion"])


def cmd_schema(schema_path, values_path):
    import jsonschema
    schema = json.load(open(schema_path))
    values = yaml.safe_load(open(values_path))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    jsonschema.Draft7Validator(schema).validate(values)

    def walk(sc, path):
        if "properties" in sc:
            assert sc.get("additionalProperties") is False, f"{path or '(top)'}: additionalProperties is not false"
            for k, sub in sc["properties"].items():
                assert sub.get("description"), f"{path}.{k}: no description"
                walk(sub, f"{path}.{k}" if path else k)
    walk(schema, "")

    def cover(v, sc, path):
        for k, sub in v.items():
            assert k in sc.get("properties", {}), f"{path}{k} is not in the schema"
            if isinstance(sub, dict) and "properties" in sc["properties"][k]:
                cover(sub, sc["properties"][k], f"{path}{k}.")
    cover(values, schema, "")


def cmd_readme(readme_path, values_path, schema_path):
    values = yaml.safe_load(open(values_path))
    schema = json.load(open(schema_path))
    rows = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", open(readme_path).read(), re.M))
    missing = []

    def walk(v, sc, path):
        for k, sub in v.items():
            p = f"{path}.{k}" if path else k
            ssc = sc["properties"][k]
            if p in rows:
                continue
            if isinstance(sub, dict) and "properties" in ssc:
                walk(sub, ssc, p)
            else:
                missing.append(p)
    walk(values, schema, "")
    assert not missing, f"values without a README row: {missing}"

    def exists(p):
        v = values
        for part in p.split("."):
            if not isinstance(v, dict) or part not in v:
                return False
            v = v[part]
        return True
    stale = sorted(r for r in rows if not exists(r))
    assert not stale, f"README rows for values that do not exist: {stale}"


if __name__ == "__main__":
    try:
        globals()["cmd_" + sys.argv[1].replace("-", "_")](*sys.argv[2:])
    except Exception as e:  # one line instead of a traceback
        import traceback
        frame = traceback.extract_tb(e.__traceback__)[-1]
        msg = getattr(e, "message", None) or str(e)  # jsonschema errors: the short form
        print(f"{type(e).__name__}: {msg} (check line {frame.lineno}: {frame.line})")
        sys.exit(1)
