{{/*
Helpers. Each takes a context with .Values (this chart's values),
.Release and .Chart, so that a gateway chart can call them for its own
pod with this chart's values, e.g. as a dependency aliased envSidecar:

  {{- $sidecar := dict "Values" .Values.envSidecar "Release" .Release "Chart" .Chart }}
  initContainers:
    {{- include "env-sidecar.container" $sidecar | nindent 4 }}
  volumes:
    {{- include "env-sidecar.volumes" $sidecar | nindent 4 }}
*/}}

{{/* The name of every object: <release>-env-sidecar, or fullnameOverride. */}}
{{- define "env-sidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "env-sidecar" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (.Values.nameOverride | default "env-sidecar") | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "env-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.nameOverride | default "env-sidecar" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "env-sidecar.labels" -}}
{{ include "env-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret holding the admin token. */}}
{{- define "env-sidecar.adminSecret" -}}
{{- .Values.admin.token.existingSecret | default (printf "%s-admin" (include "env-sidecar.fullname" .)) -}}
{{- end -}}

{{/* The data plane's address: every address standalone, loopback beside a gateway. */}}
{{- define "env-sidecar.listen" -}}
{{- if eq .Values.mode "standalone" -}}
0.0.0.0:{{ .Values.server.port }}
{{- else -}}
127.0.0.1:{{ .Values.server.port }}
{{- end -}}
{{- end -}}

{{/* TLS files of a Redis connection (`tls` values) under `dir`, as config keys. */}}
{{- define "env-sidecar.tlsKeys" -}}
{{- $tls := .tls -}}
{{- if $tls.existingSecret }}
tls_ca_file = {{ printf "%s/ca.crt" .dir | toJson }}
{{- if $tls.clientCertificate }}
tls_cert_file = {{ printf "%s/tls.crt" .dir | toJson }}
tls_key_file = {{ printf "%s/tls.key" .dir | toJson }}
{{- end }}
{{- end }}
{{- end -}}

{{/* sidecar.toml, rendered from the values. */}}
{{- define "env-sidecar.config" -}}
{{- $v := .Values -}}
[server]
listen = {{ include "env-sidecar.listen" . | toJson }}
unix_socket = {{ $v.server.unixSocket | toJson }}
project_header = {{ $v.server.projectHeader | toJson }}
environment_header = {{ $v.server.environmentHeader | toJson }}
max_pointers_header_bytes = {{ $v.server.maxPointersHeaderBytes | int }}
grpc_pointers_struct = {{ $v.server.grpcPointersStruct | toJson }}
http1 = {{ $v.server.http1 | toJson }}

[admin]
listen = {{ printf "0.0.0.0:%d" ($v.admin.port | int) | toJson }}
token_env = "ENV_SIDECAR_ADMIN_TOKEN"

[source]
kind = {{ $v.source.kind | toJson }}
{{- if eq $v.source.kind "file" }}
path = {{ printf "/etc/env-sidecar/snapshot/%s" $v.source.file.key | toJson }}
{{- else if eq $v.source.kind "http" }}
url = {{ required "source.http.url is required when source.kind is http" $v.source.http.url | toJson }}
mode = {{ $v.source.http.mode | toJson }}
{{- else }}
url = {{ required "source.redis.url is required when source.kind is redis" $v.source.redis.url | toJson }}
key_prefix = {{ $v.source.redis.keyPrefix | toJson }}
{{- if $v.source.redis.readFrom }}
read_from = {{ $v.source.redis.readFrom | toJson }}
{{- end }}
{{- include "env-sidecar.tlsKeys" (dict "tls" $v.source.tls "dir" "/etc/env-sidecar/tls/source") }}
{{- end }}
{{- if $v.source.token.existingSecret }}
token_env = "ENV_SIDECAR_CONTROL_PLANE_TOKEN"
{{- else }}
token_env = ""
{{- end }}
poll_interval = {{ $v.source.pollInterval | toJson }}
request_timeout = {{ $v.source.requestTimeout | toJson }}
long_poll_wait = {{ $v.source.longPollWait | toJson }}
backoff_max = {{ $v.source.backoffMax | toJson }}
max_removed_fraction = {{ $v.source.maxRemovedFraction }}
max_document_bytes = {{ $v.source.maxDocumentBytes | int }}

[cache]
path = {{ ternary "/var/lib/env-sidecar/last-known-good.json" "" $v.cache.enabled | toJson }}

[readiness]
max_staleness = {{ $v.readiness.maxStaleness | toJson }}

[log]
format = {{ $v.log.format | toJson }}
level = {{ $v.log.level | toJson }}

[trust]
{{- if or $v.trust.keys.configMap $v.trust.keys.secret $v.trust.keys.publicKeys }}
keys = ["/etc/env-sidecar/trust/"]
{{- else }}
keys = []
{{- end }}
require_signatures = {{ $v.trust.requireSignatures }}
max_signature_age = {{ $v.trust.maxSignatureAge | toJson }}
max_clock_skew = {{ $v.trust.maxClockSkew | toJson }}

[node]
{{- if $v.node.id }}
id = {{ $v.node.id | toJson }}
{{- else }}
id_env = "POD_NAME"
{{- end }}
labels = { {{- range $i, $k := keys $v.node.labels | sortAlpha }}{{ if $i }},{{ end }} {{ $k | toJson }} = {{ index $v.node.labels $k | toString | toJson }}{{ end }} }

[report]
enabled = {{ $v.report.enabled }}
interval = {{ $v.report.interval | toJson }}
min_interval = {{ $v.report.minInterval | toJson }}
{{- if $v.report.redisUrl }}
redis_url = {{ $v.report.redisUrl | toJson }}
{{- if $v.report.token.existingSecret }}
token_env = "ENV_SIDECAR_REPORT_TOKEN"
{{- end }}
{{- include "env-sidecar.tlsKeys" (dict "tls" $v.report.tls "dir" "/etc/env-sidecar/tls/report") }}
{{- end }}
{{- end -}}

{{/* A Secret key as a file: `secret` values (existingSecret + *Key) → items. */}}
{{- define "env-sidecar.tlsItems" -}}
- key: {{ .caKey }}
  path: ca.crt
{{- if .clientCertificate }}
- key: {{ .certKey }}
  path: tls.crt
- key: {{ .keyKey }}
  path: tls.key
{{- end }}
{{- end -}}

{{/* The pod's volumes, as list items. */}}
{{- define "env-sidecar.volumes" -}}
{{- $v := .Values -}}
{{- $name := include "env-sidecar.fullname" . -}}
- name: {{ $name }}-config
  configMap:
    name: {{ $name }}
{{- if eq $v.source.kind "file" }}
- name: {{ $name }}-snapshot
  configMap:
    name: {{ $v.source.file.configMap | default (printf "%s-snapshot" $name) }}
{{- end }}
{{- if $v.trust.keys.secret }}
- name: {{ $name }}-trust
  secret:
    secretName: {{ $v.trust.keys.secret }}
{{- else if or $v.trust.keys.configMap $v.trust.keys.publicKeys }}
- name: {{ $name }}-trust
  configMap:
    name: {{ $v.trust.keys.configMap | default (printf "%s-trust" $name) }}
{{- end }}
{{- if and (eq $v.source.kind "redis") $v.source.tls.existingSecret }}
- name: {{ $name }}-source-tls
  secret:
    secretName: {{ $v.source.tls.existingSecret }}
    items:
      {{- include "env-sidecar.tlsItems" $v.source.tls | nindent 6 }}
{{- end }}
{{- if and $v.report.redisUrl $v.report.tls.existingSecret }}
- name: {{ $name }}-report-tls
  secret:
    secretName: {{ $v.report.tls.existingSecret }}
    items:
      {{- include "env-sidecar.tlsItems" $v.report.tls | nindent 6 }}
{{- end }}
{{- if $v.cache.enabled }}
- name: {{ $name }}-cache
  emptyDir:
    sizeLimit: {{ $v.cache.sizeLimit }}
{{- end }}
{{- if $v.server.unixSocket }}
- name: {{ $name }}-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end -}}

{{/* The sidecar's container, as a list item (for containers, or for
initContainers when sidecar.native: it then carries restartPolicy: Always). */}}
{{- define "env-sidecar.container" -}}
{{- $v := .Values -}}
{{- $name := include "env-sidecar.fullname" . -}}
- name: env-sidecar
  image: {{ printf "%s:%s" $v.image.repository $v.image.tag | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if and (eq $v.mode "sidecar") $v.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args: ["--config", "/etc/env-sidecar/config/sidecar.toml"]
  ports:
    {{- if eq $v.mode "standalone" }}
    - name: sidecar-data
      containerPort: {{ $v.server.port }}
      protocol: TCP
    {{- end }}
    - name: sidecar-admin
      containerPort: {{ $v.admin.port }}
      protocol: TCP
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: ENV_SIDECAR_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "env-sidecar.adminSecret" . }}
          key: {{ $v.admin.token.key }}
    {{- if $v.source.token.existingSecret }}
    - name: ENV_SIDECAR_CONTROL_PLANE_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $v.source.token.existingSecret }}
          key: {{ $v.source.token.key }}
    {{- end }}
    {{- if and $v.report.redisUrl $v.report.token.existingSecret }}
    - name: ENV_SIDECAR_REPORT_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $v.report.token.existingSecret }}
          key: {{ $v.report.token.key }}
    {{- end }}
  startupProbe:
    # Passes once a snapshot is loaded (the cache or the source).
    httpGet:
      path: /readyz
      port: sidecar-admin
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: sidecar-admin
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
  livenessProbe:
    # The contract's liveness route: 200 while the process runs.
    httpGet:
      path: /healthz
      port: sidecar-admin
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ $name }}-config
      mountPath: /etc/env-sidecar/config
      readOnly: true
    {{- if eq $v.source.kind "file" }}
    - name: {{ $name }}-snapshot
      mountPath: /etc/env-sidecar/snapshot
      readOnly: true
    {{- end }}
    {{- if or $v.trust.keys.configMap $v.trust.keys.secret $v.trust.keys.publicKeys }}
    - name: {{ $name }}-trust
      mountPath: /etc/env-sidecar/trust
      readOnly: true
    {{- end }}
    {{- if and (eq $v.source.kind "redis") $v.source.tls.existingSecret }}
    - name: {{ $name }}-source-tls
      mountPath: /etc/env-sidecar/tls/source
      readOnly: true
    {{- end }}
    {{- if and $v.report.redisUrl $v.report.tls.existingSecret }}
    - name: {{ $name }}-report-tls
      mountPath: /etc/env-sidecar/tls/report
      readOnly: true
    {{- end }}
    {{- if $v.cache.enabled }}
    - name: {{ $name }}-cache
      mountPath: /var/lib/env-sidecar
    {{- end }}
    {{- if $v.server.unixSocket }}
    - name: {{ $name }}-socket
      mountPath: {{ dir $v.server.unixSocket }}
    {{- end }}
{{- end -}}

{{/* Pod annotations that roll the pods when the config changes. */}}
{{- define "env-sidecar.checksum" -}}
checksum/env-sidecar-config: {{ include "env-sidecar.config" . | sha256sum }}
{{- end -}}
