{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "pcam.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart> unless the release name already contains the chart name.
Truncated to 52 characters so "<fullname>-<component>" stays a valid DNS label.
*/}}
{{- define "pcam.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the chart label.
*/}}
{{- define "pcam.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "pcam.labels" -}}
helm.sh/chart: {{ include "pcam.chart" . }}
{{ include "pcam.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pcam
{{- end }}

{{/*
Selector labels shared by every pod of the release.
*/}}
{{- define "pcam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pcam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "pcam.componentLabels" -}}
{{ include "pcam.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "pcam.componentSelectorLabels" -}}
{{ include "pcam.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of one component's objects. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "pcam.componentName" -}}
{{- printf "%s-%s" (include "pcam.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "pcam.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pcam.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference of one of the platform's images. Call with (dict "root" $ "image" .Values.gateway.image).
The tag defaults to the chart's appVersion; the registry to image.registry.
*/}}
{{- define "pcam.image" -}}
{{- $registry := default .root.Values.image.registry .image.registry }}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Image of the Triton container: the NGC image with gpu.enabled, else the CPU image.
*/}}
{{- define "pcam.triton.image" -}}
{{- if .Values.triton.gpu.enabled }}
{{- include "pcam.image" (dict "root" . "image" .Values.triton.gpu.image) }}
{{- else }}
{{- include "pcam.image" (dict "root" . "image" .Values.triton.image) }}
{{- end }}
{{- end }}

{{/*
The gateway's in-cluster URL (its Service and the Service's port), for the release's own clients: the
`helm test` pod and the whole-slide Job.
*/}}
{{- define "pcam.gateway.url" -}}
{{- printf "http://%s:%v" (include "pcam.componentName" (dict "root" . "component" "gateway")) .Values.gateway.service.port }}
{{- end }}

{{/*
Pod-level fields every workload shares. Call with (dict "root" $ "component" "gateway" "values" .Values.gateway).
*/}}
{{- define "pcam.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "pcam.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if ne .component "test" }}
{{- include "pcam.topologySpread" . }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints of one component: its own list if set, else one soft constraint per
topologySpread.topologyKeys entry. Call like pcam.podCommon.
*/}}
{{- define "pcam.topologySpread" -}}
{{- $spread := .root.Values.topologySpread }}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if $spread.enabled }}
topologySpreadConstraints:
  {{- range $spread.topologyKeys }}
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "pcam.componentSelectorLabels" $ | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end }}
{{- end }}

{{/*
Container securityContext (every container, init and test containers included).
*/}}
{{- define "pcam.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end }}

{{/*
The port each platform service listens on inside its pod, fixed: `<component>.service.port` changes only
the Service's port (a process without capabilities cannot bind a port below 1024), the container port,
PCAM_<SERVICE>_PORT and the NetworkPolicies (which see pod ports, after the Service's translation) stay.
Call with the component name.
*/}}
{{- define "pcam.containerPort" -}}
{{- get (dict "gateway" "8080" "preprocess" "8081" "ensemble" "8082") . }}
{{- end }}

{{/*
HTTP probes of a platform service: /healthz liveness and startup; readiness /readyz for preprocess and
ensemble (their own state: release loaded, Triton reachable for the ensemble) but /healthz for the
gateway. The gateway's /readyz requires preprocess and ensemble ready, which require Triton: one Triton
restart (a TensorRT build takes up to 20 min) would take every gateway pod out of its Service, and
clients would get connection refused (an Ingress: 502) instead of the gateway's own 503 + Retry-After,
which it answers by itself while a dependency is down. `helm test` still checks the gateway's /readyz.
Call with (dict "root" $ "component" "gateway"), optionally "portName" (the container port's name,
default `http`).
*/}}
{{- define "pcam.serviceProbes" -}}
{{- $port := default "http" .portName -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  periodSeconds: 5
  failureThreshold: 36
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: {{ ternary "/healthz" "/readyz" (eq .component "gateway") }}
    port: {{ $port }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/*
Environment shared by the services: bind address, numba cache, tracing. Call with (dict "root" $ "component" "gateway").
*/}}
{{/*
Settings several services must agree on (AgreedSettings in services/common/settings.py): one
PCAM_<FIELD> variable per field, set once in `shared` and given to each service whose settings have it.
/models is where the chart mounts the model repository.
*/}}
{{- define "pcam.sharedEnv" -}}
{{- $shared := .root.Values.shared }}
{{- if has .component (list "preprocess" "ensemble") }}
PCAM_MODEL_REPOSITORY: /models
{{- with $shared.releasePollSeconds }}
PCAM_RELEASE_POLL_S: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- if has .component (list "gateway" "preprocess") }}
{{- with $shared.maxImageBytes }}
PCAM_MAX_IMAGE_BYTES: {{ . | int64 | toString | quote }}
{{- end }}
{{- with $shared.maxImages }}
PCAM_MAX_IMAGES: {{ . | int64 | toString | quote }}
{{- end }}
{{- end }}
{{- if has .component (list "gateway" "ensemble") }}
{{- with $shared.maxExplainImages }}
PCAM_MAX_EXPLAIN_IMAGES: {{ . | int64 | toString | quote }}
{{- end }}
{{- end }}
{{- with $shared.problemTypeBase }}
PCAM_PROBLEM_TYPE_BASE: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "pcam.serviceEnv" -}}
{{- $prefix := printf "PCAM_%s_" (upper .component) }}
{{ $prefix }}HOST: "0.0.0.0"
{{ $prefix }}PORT: {{ include "pcam.containerPort" .component | quote }}
{{- include "pcam.sharedEnv" . }}
NUMBA_CACHE_DIR: /tmp/numba
{{- if .root.Values.tracing.enabled }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .root.Values.tracing.otlpEndpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf
OTEL_TRACES_EXPORTER: otlp
OTEL_SERVICE_NAME: {{ printf "pcam-%s" .component | quote }}
OTEL_RESOURCE_ATTRIBUTES: {{ printf "service.namespace=pcam,deployment.environment=%s,k8s.namespace.name=%s" .root.Release.Name .root.Release.Namespace | quote }}
OTEL_TRACES_SAMPLER: parentbased_traceidratio
OTEL_TRACES_SAMPLER_ARG: {{ .root.Values.tracing.sampleRatio | toString | quote }}
{{- end }}
{{- $values := index .root.Values .component }}
{{- with $values.maxInFlightRequests }}
{{ $prefix }}MAX_IN_FLIGHT_REQUESTS: {{ . | int64 | toString | quote }}
{{- end }}
{{- with $values.maxPendingPatches }}
{{ $prefix }}MAX_PENDING_PATCHES: {{ . | int64 | toString | quote }}
{{- end }}
{{- range $name, $value := $values.env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Redis: host, URL (never with the password), and the Secret holding the AUTH password.
*/}}
{{- define "pcam.redis.host" -}}
{{- if .Values.redis.enabled }}
{{- include "pcam.componentName" (dict "root" . "component" "redis") }}
{{- else }}
{{- required "externalRedis.host is required when redis.enabled is false" .Values.externalRedis.host }}
{{- end }}
{{- end }}

{{- define "pcam.redis.url" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:%v/0" (include "pcam.redis.host" .) .Values.redis.service.port }}
{{- else }}
{{- printf "%s://%s:%v/%v" (ternary "rediss" "redis" .Values.externalRedis.tls) (include "pcam.redis.host" .) .Values.externalRedis.port .Values.externalRedis.db }}
{{- end }}
{{- end }}

{{/*
Name of the Secret with the Redis password ("" when Redis runs without AUTH).
*/}}
{{- define "pcam.redis.secretName" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.enabled }}
{{- default (include "pcam.componentName" (dict "root" . "component" "redis")) .Values.redis.auth.existingSecret }}
{{- end }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "pcam.redis.secretKey" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/*
The generated Redis password: the one already in the release's Secret (so upgrades keep it), else a
new random one, drawn once per render (memoized) so every template sees the same value.
*/}}
{{- define "pcam.redis.generatedPassword" -}}
{{- if not (hasKey .Values.redis.auth "_generatedPassword") }}
{{- $name := include "pcam.componentName" (dict "root" . "component" "redis") }}
{{- $key := .Values.redis.auth.existingSecretPasswordKey }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- $password := "" }}
{{- if and $existing (hasKey (default dict $existing.data) $key) }}
{{- $password = index $existing.data $key | b64dec }}
{{- else }}
{{- $password = randAlphaNum 32 }}
{{- end }}
{{- $_ := set .Values.redis.auth "_generatedPassword" $password }}
{{- end }}
{{- .Values.redis.auth._generatedPassword }}
{{- end }}

{{/*
Whether the chart generates the Redis Secret.
*/}}
{{- define "pcam.redis.generatesSecret" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled (not .Values.redis.auth.existingSecret) }}true{{- end }}
{{- end }}

{{/*
Model repository: the /models volume, its read-only mount, and (objectStorage) the init container
that fills it. Call the init container with (dict "root" $ "manifestOnly" true|false).
*/}}
{{- define "pcam.modelRepository.volume" -}}
- name: models
{{- if eq .Values.modelRepository.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ default (include "pcam.componentName" (dict "root" . "component" "models")) .Values.modelRepository.pvc.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.modelRepository.objectStorage.sizeLimit }}
{{- end }}
{{- end }}

{{- define "pcam.modelRepository.mount" -}}
- name: models
  mountPath: /models
  readOnly: true
{{- if and (eq .Values.modelRepository.source "pvc") .Values.modelRepository.pvc.subPath }}
  subPath: {{ .Values.modelRepository.pvc.subPath }}
{{- end }}
{{- end }}

{{- define "pcam.modelRepository.initContainers" -}}
{{- $root := .root }}
{{- $store := $root.Values.modelRepository.objectStorage }}
{{- if eq $root.Values.modelRepository.source "objectStorage" }}
{{- $uri := required "modelRepository.objectStorage.uri is required with source objectStorage" $store.uri }}
initContainers:
  - name: fetch-models
    image: {{ include "pcam.image" (dict "root" $root "image" $store.image) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    {{- if $store.command }}
    command:
      {{- toYaml $store.command | nindent 6 }}
    {{- else }}
    command: ["aws"]
    args:
      - s3
      - sync
      - {{ $uri | quote }}
      - /models
      - --no-progress
      - --only-show-errors
      {{- with $store.endpointUrl }}
      - --endpoint-url
      - {{ . | quote }}
      {{- end }}
      {{- if .manifestOnly }}
      - --exclude
      - "*"
      - --include
      - release.json
      {{- end }}
    {{- end }}
    env:
      - name: MODEL_REPOSITORY_URI
        value: {{ $uri | quote }}
      - name: TARGET_DIR
        value: /models
      - name: MANIFEST_ONLY
        value: {{ ternary "true" "false" .manifestOnly | quote }}
      - name: AWS_REGION
        value: {{ $store.region | quote }}
      - name: HOME
        value: /tmp
    {{- with $store.existingSecret }}
    envFrom:
      - secretRef:
          name: {{ . }}
    {{- end }}
    {{- include "pcam.containerSecurityContext" $root | nindent 4 }}
    resources:
      {{- toYaml $store.resources | nindent 6 }}
    volumeMounts:
      - name: models
        mountPath: /models
      - name: tmp
        mountPath: /tmp
{{- end }}
{{- end }}

{{/*
Deployment strategy/replicas: no replicas field while an HPA owns it.
*/}}
{{- define "pcam.replicas" -}}
{{- if not .autoscaling.enabled -}}
replicas: {{ .replicaCount }}
{{- end }}
{{- end }}

{{/*
The fewest replicas a component runs with: autoscaling.minReplicas under an HPA, else replicaCount.
*/}}
{{- define "pcam.minReplicas" -}}
{{- ternary .autoscaling.minReplicas .replicaCount .autoscaling.enabled | int }}
{{- end }}

{{/*
Whether a component gets a PodDisruptionBudget: only when it always runs more than one replica (a
minAvailable 1 budget over a single pod would block every node drain).
*/}}
{{- define "pcam.wantsPdb" -}}
{{- if and .pdb.enabled (gt (int (include "pcam.minReplicas" .)) 1) }}true{{- end }}
{{- end }}

{{/*
The most replicas a component may run: autoscaling.maxReplicas under an HPA, else replicaCount.
*/}}
{{- define "pcam.maxReplicas" -}}
{{- ternary .autoscaling.maxReplicas .replicaCount .autoscaling.enabled | int }}
{{- end }}

{{/*
Triton's rollout strategy: triton.strategy when set; else, on GPUs, replace a pod before starting the
next (maxSurge 0: no spare GPU needed, and a ReadWriteOnce engine-cache claim is never wanted by two
pods on different nodes); on CPU, start the new pod first (maxSurge 1, maxUnavailable 0).
*/}}
{{- define "pcam.triton.strategy" -}}
{{- if .Values.triton.strategy }}
{{- toYaml .Values.triton.strategy }}
{{- else if .Values.triton.gpu.enabled }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 0
  maxUnavailable: 1
{{- else }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- end }}
{{- end }}

{{/*
Refuse a ReadWriteOnce engine-cache claim shared by more than one Triton pod: the second pod would hang
in ContainerCreating (Multi-Attach) on another node. `accessModes` describes an existingClaim too.
*/}}
{{- define "pcam.triton.checkEngineCache" -}}
{{- $gpu := .Values.triton.gpu }}
{{- if and $gpu.enabled (eq $gpu.engineCache.type "pvc") }}
{{- $modes := $gpu.engineCache.pvc.accessModes }}
{{- $single := and (not (has "ReadWriteMany" $modes)) (or (has "ReadWriteOnce" $modes) (has "ReadWriteOncePod" $modes)) }}
{{- $max := int (include "pcam.maxReplicas" .Values.triton) }}
{{- if and $single (gt $max 1) }}
{{- fail (printf "triton.gpu.engineCache.pvc.accessModes %v cannot serve up to %d Triton replicas (triton.replicaCount, or triton.autoscaling.maxReplicas): use a ReadWriteMany claim, engineCache.type emptyDir, or one replica" $modes $max) }}
{{- end }}
{{- end }}
{{- end }}
