{{/* vim: set filetype=mustache: */}}
{{/*
Expand the name of the chart.
*/}}
{{- define "kafka-dedup-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "kafka-dedup-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "kafka-dedup-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "kafka-dedup-proxy.labels" -}}
helm.sh/chart: {{ include "kafka-dedup-proxy.chart" . }}
{{ include "kafka-dedup-proxy.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "kafka-dedup-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-dedup-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "kafka-dedup-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kafka-dedup-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespace of the release, or namespaceOverride.
*/}}
{{- define "kafka-dedup-proxy.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Host name the proxy advertises for every broker: proxy.advertisedHost, or the
Service DNS name <fullname>.<namespace>.svc, so that clients come back to the
same Service for the per-broker ports.
*/}}
{{- define "kafka-dedup-proxy.advertisedHost" -}}
{{- if .Values.proxy.advertisedHost }}
{{- tpl .Values.proxy.advertisedHost . }}
{{- else }}
{{- printf "%s.%s.svc" (include "kafka-dedup-proxy.fullname" .) (include "kafka-dedup-proxy.namespace" .) }}
{{- end }}
{{- end }}

{{/*
First broker port: proxy.brokerPortBase, or proxy.port + 1.
*/}}
{{- define "kafka-dedup-proxy.brokerPortBase" -}}
{{- if kindIs "invalid" .Values.proxy.brokerPortBase }}
{{- add1 (int .Values.proxy.port) }}
{{- else }}
{{- int .Values.proxy.brokerPortBase }}
{{- end }}
{{- end }}

{{/*
The ports of the proxy as a YAML list of {name, port}: the bootstrap port,
then one per entry of kafka.brokerIds (none with SNI routing: every broker
is served on the bootstrap port). Fails on a port outside 1-65535, a clash
with another port, or a repeated broker id.
*/}}
{{- define "kafka-dedup-proxy.kafkaPorts" -}}
{{- $base := int (include "kafka-dedup-proxy.brokerPortBase" .) }}
{{- $bootstrap := int .Values.proxy.port }}
{{- $metrics := int .Values.proxy.metricsPort }}
{{- if eq $bootstrap $metrics }}
{{- fail (printf "proxy.port and proxy.metricsPort are both %d" $bootstrap) }}
{{- end }}
{{- $seen := dict }}
- name: bootstrap
  port: {{ $bootstrap }}
{{- if not .Values.tls.server.sni.enabled }}
{{- range $id := .Values.kafka.brokerIds }}
{{- $port := add $base (int $id) }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "broker id %d gives port %d (proxy.brokerPortBase %d + id), outside 1-65535" (int $id) $port $base) }}
{{- end }}
{{- if or (eq $port $bootstrap) (eq $port $metrics) }}
{{- fail (printf "broker id %d gives port %d, which is also proxy.port or proxy.metricsPort" (int $id) $port) }}
{{- end }}
{{- if hasKey $seen (toString $id) }}
{{- fail (printf "kafka.brokerIds lists broker id %d twice" (int $id)) }}
{{- end }}
{{- $_ := set $seen (toString $id) true }}
- name: {{ printf "broker-%d" (int $id) }}
  port: {{ $port }}
{{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value set, or shutdown grace + 15. Fails
when it leaves the proxy no time to drain.
*/}}
{{- define "kafka-dedup-proxy.terminationGracePeriodSeconds" -}}
{{- $grace := int .Values.proxy.shutdownGraceSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than proxy.shutdownGraceSeconds (%d)" (int .Values.terminationGracePeriodSeconds) $grace) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Image reference: repository:tag, or repository@digest.
*/}}
{{- define "kafka-dedup-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Label matchers selecting this release's metrics in PromQL.
*/}}
{{- define "kafka-dedup-proxy.promSelector" -}}
{{- if .Values.prometheusRule.metricSelector }}
{{- .Values.prometheusRule.metricSelector }}
{{- else }}
{{- printf "job=\"%s\", namespace=\"%s\"" (include "kafka-dedup-proxy.fullname" .) (include "kafka-dedup-proxy.namespace" .) }}
{{- end }}
{{- end }}

{{/*
--dedup-mode value. An unquoted on/off in a values file is read as a YAML
boolean; map it back.
*/}}
{{- define "kafka-dedup-proxy.dedupMode" -}}
{{- $mode := .Values.proxy.dedup.mode }}
{{- if kindIs "bool" $mode }}
{{- ternary "on" "off" $mode }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/*
The Secrets mounted into the proxy container: (volume name, Secret, mount
path). The certificate Secrets the TLS settings name, and the dedup store's
password Secret when store.passwordFrom is "file".
*/}}
{{- define "kafka-dedup-proxy.mountedSecrets" -}}
{{- $s := .Values.tls.server -}}
{{- $u := .Values.tls.upstream -}}
{{- if $s.enabled }}
- [tls-server, {{ required "tls.server.secretName is required when tls.server.enabled" $s.secretName | quote }}, /etc/kdp/tls/server]
{{- if $s.clientCaSecretName }}
- [tls-client-ca, {{ $s.clientCaSecretName | quote }}, /etc/kdp/tls/client-ca]
{{- end }}
{{- end }}
{{- if $u.enabled }}
{{- if $u.caSecretName }}
- [tls-upstream-ca, {{ $u.caSecretName | quote }}, /etc/kdp/tls/upstream-ca]
{{- end }}
{{- if $u.clientCertSecretName }}
- [tls-upstream-client, {{ $u.clientCertSecretName | quote }}, /etc/kdp/tls/upstream-client]
{{- end }}
{{- end }}
{{- if and (include "kafka-dedup-proxy.storeUrl" .) .Values.store.existingSecret (eq .Values.store.passwordFrom "file") }}
- [store-password, {{ .Values.store.existingSecret | quote }}, /etc/kdp/store]
{{- end }}
{{- end }}

{{- define "kafka-dedup-proxy.secretVolumes" -}}
{{- range (include "kafka-dedup-proxy.mountedSecrets" . | fromYamlArray) }}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 | quote }}
{{- end }}
{{- end }}

{{- define "kafka-dedup-proxy.secretVolumeMounts" -}}
{{- range (include "kafka-dedup-proxy.mountedSecrets" . | fromYamlArray) }}
- name: {{ index . 0 }}
  mountPath: {{ index . 2 }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Name of the demo Redis's Deployment and Service.
*/}}
{{- define "kafka-dedup-proxy.demoRedisName" -}}
{{- printf "%s-redis" (include "kafka-dedup-proxy.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Labels of the demo Redis's pods. Its app.kubernetes.io/name differs from the
proxy's, so the proxy's Deployment and Service never select a Redis pod.
*/}}
{{- define "kafka-dedup-proxy.demoRedisSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-redis" (include "kafka-dedup-proxy.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: demo-redis
{{- end }}

{{/*
The dedup store's URL: store.url, or the demo Redis's Service; empty when
there is no store. Fails on a password in the URL (it would be readable in
the pod spec) and on store.url together with store.demoRedis.enabled.
*/}}
{{- define "kafka-dedup-proxy.storeUrl" -}}
{{- $s := .Values.store }}
{{- if and $s.url $s.demoRedis.enabled }}
{{- fail "store.url and store.demoRedis.enabled are both set: the demo Redis is for installs without a Redis of their own; drop one" }}
{{- end }}
{{- if regexMatch "^[a-z+]+://[^/@]*:[^/@]*@" $s.url }}
{{- fail "store.url carries a password: put it in a Secret and name it in store.existingSecret" }}
{{- end }}
{{- if $s.url }}
{{- $s.url }}
{{- else if $s.demoRedis.enabled }}
{{- printf "redis://%s.%s.svc:6379" (include "kafka-dedup-proxy.demoRedisName" .) (include "kafka-dedup-proxy.namespace" .) }}
{{- end }}
{{- end }}

{{/*
Environment of the proxy container for the dedup store; nothing without a store.
*/}}
{{- define "kafka-dedup-proxy.storeEnv" -}}
{{- $url := include "kafka-dedup-proxy.storeUrl" . }}
{{- if $url }}
{{- $s := .Values.store }}
- name: KDP_DEDUP_STORE
  value: {{ $url | quote }}
- name: KDP_DEDUP_STORE_TIMEOUT_MS
  value: {{ int64 $s.timeoutMs | toString | quote }}
- name: KDP_KEY_DEDUP_ON_STORE_ERROR
  value: {{ .Values.proxy.keyDedup.onStoreError | quote }}
{{- if $s.existingSecret }}
{{- if eq $s.passwordFrom "env" }}
- name: KDP_DEDUP_STORE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret | quote }}
      key: {{ $s.existingSecretKey | quote }}
{{- else }}
- name: KDP_DEDUP_STORE_PASSWORD_FILE
  value: {{ printf "/etc/kdp/store/%s" $s.existingSecretKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The key-dedup rules ConfigMap's name.
*/}}
{{- define "kafka-dedup-proxy.keyDedupRulesName" -}}
{{- printf "%s-key-dedup-rules" (include "kafka-dedup-proxy.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{/*
proxy.keyDedup.rules as the TOML file --key-dedup-rules reads: one
[[rule]] table per rule (JSON strings are TOML basic strings).
*/}}
{{- define "kafka-dedup-proxy.keyDedupRulesToml" -}}
{{- range .Values.proxy.keyDedup.rules }}
[[rule]]
topics = {{ toJson .topics }}
source = {{ toJson .source }}
{{ end }}
{{- end }}
