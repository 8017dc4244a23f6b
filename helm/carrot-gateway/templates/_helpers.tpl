{{/*
Named templates of the carrot-gateway chart.

Every template here takes the chart's context (the "." of this chart). From a
parent chart that has this chart as a dependency, pass the subchart's context:
  {{ include "carrot-gateway.sidecarContainer" (index .Subcharts "carrot-gateway") }}
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "carrot-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects (63 characters at most, the DNS
label limit). A release whose name already contains the chart name is not
repeated: release "carrot-gateway" gives "carrot-gateway", not
"carrot-gateway-carrot-gateway".
*/}}
{{- define "carrot-gateway.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "carrot-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "carrot-gateway.labels" -}}
helm.sh/chart: {{ include "carrot-gateway.chart" . }}
{{ include "carrot-gateway.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: carrot-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the gateway's pods; never change them on upgrade. */}}
{{- define "carrot-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carrot-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount of the standalone Deployment. */}}
{{- define "carrot-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "carrot-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: a digest wins over a tag; the tag defaults to appVersion. */}}
{{- define "carrot-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/* Where the TLS Secrets are mounted (apart from the config file's directory). */}}
{{- define "carrot-gateway.tlsDir" -}}
/var/run/secrets/carrot-gateway
{{- end }}

{{/* "true" when the chart runs as a sidecar (mode: sidecar). */}}
{{- define "carrot-gateway.isSidecar" -}}
{{- if eq .Values.mode "sidecar" }}true{{ end }}
{{- end }}

{{/*
Address the gateway listens on: gateway.listen, else 0.0.0.0:<port> standalone
(the Service must reach it) or 127.0.0.1:<port> as a sidecar (only the pod's
own containers reach it).
*/}}
{{- define "carrot-gateway.listen" -}}
{{- if .Values.gateway.listen }}
{{- .Values.gateway.listen }}
{{- else if include "carrot-gateway.isSidecar" . }}
{{- printf "127.0.0.1:%d" (int .Values.gateway.port) }}
{{- else }}
{{- printf "0.0.0.0:%d" (int .Values.gateway.port) }}
{{- end }}
{{- end }}

{{/* Port of the listen address. */}}
{{- define "carrot-gateway.listenPort" -}}
{{- $listen := include "carrot-gateway.listen" . }}
{{- regexReplaceAll "^.*:([0-9]+)$" $listen "${1}" }}
{{- end }}

{{/* "true" when the listen address is a loopback address (reachable from inside the pod only). */}}
{{- define "carrot-gateway.listenIsLoopback" -}}
{{- $listen := include "carrot-gateway.listen" . }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "[::1]:" $listen) }}true{{ end }}
{{- end }}

{{/*
Where the gateway's config file comes from:
  existing-secret  existingSecret.configKey of existingSecret.name (a complete config file)
  secret           the chart's Secret: the file holds auth.tokens, so it is not put in a ConfigMap
  configmap        the chart's ConfigMap (no secrets in the file)
*/}}
{{- define "carrot-gateway.configSource" -}}
{{- if and .Values.existingSecret.name .Values.existingSecret.configKey }}existing-secret
{{- else if .Values.auth.tokens }}secret
{{- else }}configmap
{{- end }}
{{- end }}

{{/* Name of the Secret holding the AMQP URL (and, with tokens, the config file). */}}
{{- define "carrot-gateway.secretName" -}}
{{- default (include "carrot-gateway.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/* Key of the AMQP URL in that Secret. */}}
{{- define "carrot-gateway.amqpUrlKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.amqpUrlKey }}{{ else }}amqp-url{{ end }}
{{- end }}

{{/* Key of the config file in its ConfigMap or Secret. */}}
{{- define "carrot-gateway.configKey" -}}
{{- if eq (include "carrot-gateway.configSource" .) "existing-secret" }}{{ .Values.existingSecret.configKey }}{{ else }}config.yaml{{ end }}
{{- end }}

{{/*
The gateway's YAML config file, built from values. Only keys the gateway knows
are written (it rejects unknown keys). The listen address is passed with
--listen, the AMQP URL with CARROT_AMQP_URL from the Secret.
*/}}
{{- define "carrot-gateway.configFile" -}}
{{- $file := dict }}
{{- with .Values.config.extra }}
{{- $file = deepCopy . }}
{{- end }}
{{- with .Values.config.maxBodyBytes }}
{{- $_ := set $file "max_body_bytes" (int64 .) }}
{{- end }}
{{- range $key := list "exchanges" "queues" "consumers" "subscriptions" }}
{{- with index $.Values.config $key }}
{{- $_ := set $file $key . }}
{{- end }}
{{- end }}
{{- with .Values.auth.tokens }}
{{- $_ := set $file "auth" (dict "tokens" .) }}
{{- end }}
{{- if $file }}
{{- toYaml $file }}
{{- else }}
{{- "{}" }}
{{- end }}
{{- end }}

{{/* Checksums that roll the pods when the config file or the AMQP URL change. */}}
{{- define "carrot-gateway.checksumAnnotations" -}}
checksum/config: {{ include "carrot-gateway.configFile" . | sha256sum }}
{{- if not .Values.existingSecret.name }}
checksum/secret: {{ print .Values.amqp.url | sha256sum }}
{{- end }}
{{- end }}

{{/* Refuses values that would give a gateway that cannot start or that is open by accident. */}}
{{- define "carrot-gateway.validate" -}}
{{- if not (has .Values.mode (list "standalone" "sidecar")) }}
{{- fail (printf "mode must be \"standalone\" or \"sidecar\", not %q" (toString .Values.mode)) }}
{{- end }}
{{- if not (regexMatch "^(\\[[0-9a-fA-F:.]+\\]|[0-9.]+):[0-9]+$" (include "carrot-gateway.listen" .)) }}
{{- fail (printf "gateway.listen must be IP:PORT (e.g. 0.0.0.0:8080 or [::]:8080), not %q" (include "carrot-gateway.listen" .)) }}
{{- end }}
{{- if and (not (include "carrot-gateway.isSidecar" .)) (include "carrot-gateway.listenIsLoopback" .) }}
{{- fail (printf "gateway.listen is %s, a loopback address: the Service could not reach the gateway; leave gateway.listen empty (0.0.0.0:<port>) in standalone mode" (include "carrot-gateway.listen" .)) }}
{{- end }}
{{- if and .Values.existingSecret.name .Values.auth.tokens (not .Values.existingSecret.configKey) }}
{{- fail "auth.tokens cannot be used with existingSecret.name: the tokens go into the config file, which then must come from your Secret; put the complete config file (with auth.tokens) under a key of that Secret and name it in existingSecret.configKey" }}
{{- end }}
{{- if and (not .Values.existingSecret.name) (or .Values.amqp.tls.caSecret.name .Values.amqp.tls.clientCertSecret) (not (hasPrefix "amqps://" (toString .Values.amqp.url))) }}
{{- fail "amqp.tls is set but amqp.url is not an amqps:// URL: the gateway would refuse to start; use amqps:// (RabbitMQ's TLS port is 5671 by default)" }}
{{- end }}
{{- if and .Values.replicas.peerSecret (lt (len .Values.replicas.peerSecret) 32) }}
{{- fail "replicas.peerSecret must be at least 32 characters (e.g. openssl rand -hex 32), or empty to have one generated" }}
{{- end }}
{{- if and (not .Values.existingSecret.name) (not (regexMatch "^amqps?://" (toString .Values.amqp.url))) }}
{{- fail "amqp.url must start with amqp:// or amqps:// (or set existingSecret.name to a Secret that holds it)" }}
{{- end }}
{{- if and (not (include "carrot-gateway.listenIsLoopback" .)) (not .Values.auth.allowAnonymous) (not .Values.auth.tokens) (ne (include "carrot-gateway.configSource" .) "existing-secret") }}
{{- fail (printf "the gateway listens on %s, which is not a loopback address, and no auth tokens are configured: set auth.tokens (or existingSecret.configKey with a config file holding them), or set auth.allowAnonymous=true if the network in front of the gateway already restricts who reaches it" (include "carrot-gateway.listen" .)) }}
{{- end }}
{{- $grace := int .Values.gateway.shutdownGraceSeconds }}
{{- $sleep := int .Values.gateway.preStopSleepSeconds }}
{{- with .Values.terminationGracePeriodSeconds }}
{{- if le (int .) (add $grace $sleep) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than gateway.preStopSleepSeconds + gateway.shutdownGraceSeconds (%d), or Kubernetes kills the gateway before it has drained" (int .) (add $grace $sleep)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep plus the gateway's own drain
time (CARROT_SHUTDOWN_GRACE) plus 10 seconds of margin, unless set.
*/}}
{{- define "carrot-gateway.terminationGracePeriodSeconds" -}}
{{- default (add (int .Values.gateway.preStopSleepSeconds) (int .Values.gateway.shutdownGraceSeconds) 10) .Values.terminationGracePeriodSeconds }}
{{- end }}

{{/* HTTP probe of the gateway: a probe value without "enabled" and "path", plus httpGet. */}}
{{- define "carrot-gateway.probe" -}}
{{- $probe := .probe -}}
httpGet:
  path: {{ $probe.path }}
  port: {{ include "carrot-gateway.listenPort" .root }}
  {{- if .root.Values.gateway.tls.secretName }}
  scheme: HTTPS
  {{- end }}
{{- with omit $probe "enabled" "path" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The gateway container (a map, not a list item). Used by the Deployment and by
carrot-gateway.sidecarContainer.
*/}}
{{- define "carrot-gateway.container" -}}
{{- $sidecar := include "carrot-gateway.isSidecar" . }}
{{- $loopback := include "carrot-gateway.listenIsLoopback" . }}
name: {{ .Values.gateway.containerName }}
image: {{ include "carrot-gateway.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if and $sidecar .Values.sidecar.native }}
# Native sidecar (Kubernetes >= 1.29): started before, and stopped after, the app's containers.
restartPolicy: Always
{{- end }}
args:
  - --config
  - /etc/carrot-gateway/{{ include "carrot-gateway.configKey" . }}
  - --listen
  - {{ include "carrot-gateway.listen" . | quote }}
  {{- with .Values.gateway.extraArgs }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  - name: CARROT_AMQP_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "carrot-gateway.secretName" . }}
        key: {{ include "carrot-gateway.amqpUrlKey" . }}
  - name: CARROT_SHUTDOWN_GRACE
    value: {{ .Values.gateway.shutdownGraceSeconds | int | toString | quote }}
  - name: CARROT_LOG_FORMAT
    value: {{ .Values.gateway.logFormat | quote }}
  - name: CARROT_LOG
    value: {{ .Values.gateway.logLevel | quote }}
  {{- if .Values.auth.allowAnonymous }}
  - name: CARROT_ALLOW_ANONYMOUS
    value: "true"
  {{- end }}
  {{- $tlsDir := include "carrot-gateway.tlsDir" . }}
  {{- if .Values.gateway.tls.secretName }}
  - name: CARROT_TLS_CERT
    value: {{ printf "%s/listener-tls/tls.crt" $tlsDir | quote }}
  - name: CARROT_TLS_KEY
    value: {{ printf "%s/listener-tls/tls.key" $tlsDir | quote }}
  {{- end }}
  {{- if .Values.amqp.tls.caSecret.name }}
  - name: CARROT_AMQP_CA_FILE
    value: {{ printf "%s/amqp-ca/ca.crt" $tlsDir | quote }}
  {{- end }}
  {{- if .Values.amqp.tls.clientCertSecret }}
  - name: CARROT_AMQP_CLIENT_CERT
    value: {{ printf "%s/amqp-client/tls.crt" $tlsDir | quote }}
  - name: CARROT_AMQP_CLIENT_KEY
    value: {{ printf "%s/amqp-client/tls.key" $tlsDir | quote }}
  {{- end }}
  {{- if include "carrot-gateway.cooperates" . }}
  # Each pod's own DNS name under the headless Service, which the other replicas forward to.
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  - name: CARROT_ADVERTISE_URL
    value: {{ printf "%s://$(POD_NAME).%s.$(POD_NAMESPACE).svc:%s" (ternary "https" "http" (not (empty .Values.gateway.tls.secretName))) (include "carrot-gateway.peersName" .) (include "carrot-gateway.listenPort" .) | quote }}
  - name: CARROT_PEER_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ include "carrot-gateway.secretName" . }}
        key: {{ include "carrot-gateway.peerSecretKey" . }}
  {{- end }}
  {{- with .Values.gateway.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if not $loopback }}
ports:
  - name: {{ ternary "carrot-http" "http" (not (empty $sidecar)) }}
    containerPort: {{ include "carrot-gateway.listenPort" . }}
    protocol: TCP
{{- /* The kubelet probes the pod's IP; a loopback listener cannot be probed from there. */}}
{{- if .Values.probes.liveness.enabled }}
livenessProbe:
  {{- include "carrot-gateway.probe" (dict "root" . "probe" .Values.probes.liveness) | nindent 2 }}
{{- end }}
{{- if .Values.probes.readiness.enabled }}
readinessProbe:
  {{- include "carrot-gateway.probe" (dict "root" . "probe" .Values.probes.readiness) | nindent 2 }}
{{- end }}
{{- end }}
{{- if gt (int .Values.gateway.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    # Keeps serving while the endpoint removal reaches every load balancer (Kubernetes >= 1.30).
    sleep:
      seconds: {{ int .Values.gateway.preStopSleepSeconds }}
{{- end }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: carrot-gateway-config
    mountPath: /etc/carrot-gateway
    readOnly: true
  - name: carrot-gateway-tmp
    mountPath: /tmp
  {{- if .Values.gateway.tls.secretName }}
  - name: carrot-gateway-listener-tls
    mountPath: {{ include "carrot-gateway.tlsDir" . }}/listener-tls
    readOnly: true
  {{- end }}
  {{- if .Values.amqp.tls.caSecret.name }}
  - name: carrot-gateway-amqp-ca
    mountPath: {{ include "carrot-gateway.tlsDir" . }}/amqp-ca
    readOnly: true
  {{- end }}
  {{- if .Values.amqp.tls.clientCertSecret }}
  - name: carrot-gateway-amqp-client
    mountPath: {{ include "carrot-gateway.tlsDir" . }}/amqp-client
    readOnly: true
  {{- end }}
{{- end }}

{{/* The pod volumes the gateway container mounts (list items). */}}
{{- define "carrot-gateway.volumes" -}}
- name: carrot-gateway-config
{{- if eq (include "carrot-gateway.configSource" .) "configmap" }}
  configMap:
    name: {{ include "carrot-gateway.fullname" . }}
    items:
      - key: config.yaml
        path: config.yaml
{{- else }}
  secret:
    secretName: {{ include "carrot-gateway.secretName" . }}
    items:
      - key: {{ include "carrot-gateway.configKey" . }}
        path: {{ include "carrot-gateway.configKey" . }}
{{- end }}
- name: carrot-gateway-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- with .Values.gateway.tls.secretName }}
- name: carrot-gateway-listener-tls
  secret:
    secretName: {{ . }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}
{{- with .Values.amqp.tls.caSecret }}
{{- if .name }}
- name: carrot-gateway-amqp-ca
  secret:
    secretName: {{ .name }}
    items:
      - {key: {{ .key | quote }}, path: ca.crt}
{{- end }}
{{- end }}
{{- with .Values.amqp.tls.clientCertSecret }}
- name: carrot-gateway-amqp-client
  secret:
    secretName: {{ . }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}
{{- end }}

{{/*
Sidecar mode: the gateway container as one list item, to put under the
"containers:" of your own pod template (or under "initContainers:" with
sidecar.native=true), together with carrot-gateway.sidecarVolumes under
"volumes:". The ConfigMap and Secret it reads are rendered by this chart in
sidecar mode. See README.md.
*/}}
{{- define "carrot-gateway.sidecarContainer" -}}
{{- include "carrot-gateway.validate" . -}}
- {{ include "carrot-gateway.container" . | indent 2 | trim }}
{{- end }}

{{/* Sidecar mode: the volumes of carrot-gateway.sidecarContainer, as list items. */}}
{{- define "carrot-gateway.sidecarVolumes" -}}
{{- include "carrot-gateway.volumes" . }}
{{- end }}

{{/* Sidecar mode: pod annotations that roll your pods when the gateway's config or Secret change. */}}
{{- define "carrot-gateway.sidecarPodAnnotations" -}}
{{- include "carrot-gateway.checksumAnnotations" . }}
{{- end }}

{{/* "true" when the pods cooperate as replicas (standalone mode only). */}}
{{- define "carrot-gateway.cooperates" -}}
{{- $cooperate := .Values.replicas.cooperate }}
{{- if not (include "carrot-gateway.isSidecar" .) }}
{{- if eq (toString $cooperate) "auto" }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- else if eq (toString $cooperate) "true" }}true
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service whose DNS names the replicas advertise to each other. */}}
{{- define "carrot-gateway.peersName" -}}
{{- printf "%s-peers" (include "carrot-gateway.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* Key of the replicas' shared secret in the Secret. */}}
{{- define "carrot-gateway.peerSecretKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.peerSecretKey }}{{ else }}peer-secret{{ end }}
{{- end }}

{{/* The shared secret: as given, else the one already stored, else a new one. */}}
{{- define "carrot-gateway.peerSecret" -}}
{{- if .Values.replicas.peerSecret }}
{{- .Values.replicas.peerSecret }}
{{- else }}
{{- $stored := lookup "v1" "Secret" .Release.Namespace (include "carrot-gateway.fullname" .) }}
{{- if and $stored (index ($stored.data | default dict) "peer-secret") }}
{{- index $stored.data "peer-secret" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Prefer spreading cooperating replicas over the cluster's nodes, unless affinity is set. */}}
{{- define "carrot-gateway.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if include "carrot-gateway.cooperates" . }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "carrot-gateway.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}
