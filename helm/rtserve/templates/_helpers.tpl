{{/*
Names, labels and the few computed values shared by the templates.
*/}}

{{- define "rtserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name; 63 characters at most.
*/}}
{{- define "rtserve.fullname" -}}
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

{{- define "rtserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the server pods (Service, PDB, NetworkPolicy, topology spread). The component label keeps the
helm test pod, which shares name and instance, out of them.
*/}}
{{- define "rtserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Labels of every object except the selector's component: `rtserve.labels` adds component "server".
*/}}
{{- define "rtserve.commonLabels" -}}
helm.sh/chart: {{ include "rtserve.chart" . }}
app.kubernetes.io/name: {{ include "rtserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/part-of: rtserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rtserve.labels" -}}
{{ include "rtserve.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "rtserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: by digest when image.digest is set, otherwise by tag (the chart's appVersion by default).
*/}}
{{- define "rtserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
A Kubernetes CPU quantity ("500m", "1", "1.5", 2) as whole CPUs, rounded up, at least 1.
*/}}
{{- define "rtserve.cpuCeil" -}}
{{- $cpu := toString . }}
{{- if hasSuffix "m" $cpu }}
{{- $milli := trimSuffix "m" $cpu | int64 }}
{{- max 1 (div (add $milli 999) 1000) }}
{{- else }}
{{- max 1 (ceil (float64 $cpu) | int64) }}
{{- end }}
{{- end }}

{{/*
TensorFlow thread counts: the explicit value, or else the CPU request rounded up. Empty when neither is given,
which leaves the server to size the pools from its cgroup quota.
*/}}
{{- define "rtserve.tfThreads" -}}
{{- $explicit := index . 0 | int64 }}
{{- $resources := index . 1 }}
{{- if gt $explicit 0 }}
{{- $explicit }}
{{- else if and $resources.requests $resources.requests.cpu }}
{{- include "rtserve.cpuCeil" $resources.requests.cpu }}
{{- end }}
{{- end }}

{{/*
Seconds the kubelet waits between starting pod termination and SIGKILL: the preStop sleep, the server's
not-ready delay and its drain timeout, plus a margin.
*/}}
{{- define "rtserve.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- add (int64 $s.preStopSleepSeconds) (int64 $s.shutdownDelaySeconds) (int64 $s.drainTimeoutSeconds) (int64 $s.extraGraceSeconds) }}
{{- end }}

{{/*
server.maxBodyBytes in nginx's size syntax: whole mebibytes as "<n>m", otherwise plain bytes.
*/}}
{{- define "rtserve.nginxBodySize" -}}
{{- $bytes := int64 .Values.server.maxBodyBytes }}
{{- if eq (mod $bytes 1048576) 0 }}
{{- printf "%dm" (div $bytes 1048576) }}
{{- else }}
{{- printf "%d" $bytes }}
{{- end }}
{{- end }}

{{/*
Pod and container security settings meeting the Pod Security Standard "restricted", shared by the server and the
helm test pod.
*/}}
{{- define "rtserve.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "rtserve.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
API keys (auth.existingSecret): where the keys file is mounted, and the volume that mounts it, shared by the
server and the helm test pod. A directory mount, not subPath: the kubelet updates it in place when the Secret
changes, and the server re-reads the file within a second.
*/}}
{{- define "rtserve.authDir" -}}
/etc/rtserve/auth
{{- end }}

{{- define "rtserve.authVolume" -}}
- name: api-keys
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    items:
      - key: {{ .Values.auth.key }}
        path: {{ .Values.auth.key }}
{{- end }}

{{- define "rtserve.authMount" -}}
- name: api-keys
  mountPath: {{ include "rtserve.authDir" . }}
  readOnly: true
{{- end }}


{{/*
RTSERVE_GRPC_PORT: grpc.port when gRPC is on, "0" (the server's off switch) otherwise. The two ports must differ:
the server would fail to bind the second.
*/}}
{{- define "rtserve.grpcPort" -}}
{{- if .Values.grpc.enabled }}
{{- if eq (int64 .Values.grpc.port) (int64 .Values.server.port) }}
{{- fail (printf "grpc.port and server.port are both %d; gRPC needs a port of its own" (int64 .Values.server.port)) }}
{{- end }}
{{- .Values.grpc.port | int64 }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}

{{/*
Name of the gRPC-only objects (headless Service, Ingress, GRPCRoute): <fullname>-grpc, 63 characters at most.
*/}}
{{- define "rtserve.grpcName" -}}
{{- printf "%s-grpc" (include "rtserve.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{/*
The startup and readiness check: GET /v2/health/ready, or with probes.grpc the kubelet's own grpc.health.v1 Check
of the whole server (service ""), which answers SERVING exactly when /v2/health/ready answers 200. A gRPC probe
takes a port number only and sends no metadata, so health must stay exempt from API keys.
*/}}
{{- define "rtserve.readyCheck" -}}
{{- if .Values.probes.grpc }}
{{- if not .Values.grpc.enabled }}
{{- fail "probes.grpc needs grpc.enabled" }}
{{- end }}
{{- if and .Values.auth.existingSecret (not .Values.grpc.authExemptHealth) }}
{{- fail "probes.grpc with auth.existingSecret needs grpc.authExemptHealth: the kubelet's gRPC probe sends no API key" }}
{{- end -}}
grpc:
  port: {{ include "rtserve.grpcPort" . }}
  service: ""
{{- else -}}
httpGet:
  path: /v2/health/ready
  port: http
{{- end }}
{{- end }}
