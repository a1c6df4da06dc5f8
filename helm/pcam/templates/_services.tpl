{{/*
Deployment of preprocess or ensemble: both read /models/release.json (hot reload with the pvc source).
Call with (dict "root" $ "component" "preprocess").
*/}}
{{- define "pcam.modelService.deployment" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $component := dict "root" $root "component" .component "values" $values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "pcam.componentName" $component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "pcam.componentLabels" $component | nindent 4 }}
spec:
  {{- include "pcam.replicas" $values | nindent 2 }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "pcam.componentSelectorLabels" $component | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "pcam.componentLabels" $component | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/" .component "/configmap.yaml") $root | sha256sum }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "pcam.podCommon" $component | nindent 6 }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      {{- include "pcam.modelRepository.initContainers" (dict "root" $root "manifestOnly" true) | nindent 6 }}
      containers:
        {{- include "pcam.modelService.container" (dict "root" $root "component" .component) | nindent 8 }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- include "pcam.modelRepository.volume" $root | nindent 8 }}
{{- end }}

{{/*
The container of preprocess or ensemble, in its own Deployment or (ensemble.besideTriton) in Triton's
pod. Call with (dict "root" $ "component" "preprocess"), optionally "portName" (default `http`: port
names are unique per pod, and Triton's container has its own `http`), "tmpVolume" (the volume at /tmp,
default `tmp`) and "sharedMemory" (true: the pod's `dshm` volume at /dev/shm).
*/}}
{{- define "pcam.modelService.container" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $portName := default "http" .portName }}
{{- $component := dict "root" $root "component" .component "values" $values "portName" $portName -}}
- name: {{ .component }}
  image: {{ include "pcam.image" (dict "root" $root "image" $values.image) }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  ports:
    - name: {{ $portName }}
      containerPort: {{ include "pcam.containerPort" .component }}
      protocol: TCP
  envFrom:
    - configMapRef:
        name: {{ include "pcam.componentName" $component }}
  {{- include "pcam.containerSecurityContext" $root | nindent 2 }}
  {{- include "pcam.serviceProbes" $component | nindent 2 }}
  resources:
    {{- toYaml $values.resources | nindent 4 }}
  volumeMounts:
    - name: {{ default "tmp" .tmpVolume }}
      mountPath: /tmp
    {{- if .sharedMemory }}
    - name: dshm
      mountPath: /dev/shm
    {{- end }}
    {{- include "pcam.modelRepository.mount" $root | nindent 4 }}
{{- end }}

{{/*
ensemble.besideTriton: the ensemble runs as a second container of every Triton pod (one ensemble per
Triton), calls Triton on 127.0.0.1 and hands it the patches in the pod's shared /dev/shm. The name of
its container port there (`http` is Triton's), and the component whose pods serve the ensemble's port.
*/}}
{{- define "pcam.ensemble.portName" -}}
{{- ternary "ensemble" "http" .Values.ensemble.besideTriton.enabled }}
{{- end }}

{{- define "pcam.ensemble.podComponent" -}}
{{- ternary "triton" "ensemble" .Values.ensemble.besideTriton.enabled }}
{{- end }}

{{/*
Refuse values that cannot apply beside Triton: the ensemble has no pods of its own to autoscale.
*/}}
{{- define "pcam.ensemble.checkBesideTriton" -}}
{{- if and .Values.ensemble.besideTriton.enabled .Values.ensemble.autoscaling.enabled }}
{{- fail "ensemble.autoscaling.enabled cannot apply with ensemble.besideTriton.enabled: the ensemble runs in every Triton pod and scales with Triton (triton.replicaCount, triton.autoscaling)" }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity (a number of bytes, or a string with an optional k/M/G/T or Ki/Mi/Gi/Ti
suffix) in bytes. Call with (dict "key" "triton.shmSize" "value" .Values.triton.shmSize).
*/}}
{{- define "pcam.quantityBytes" -}}
{{- if or (kindIs "float64" .value) (kindIs "int64" .value) (kindIs "int" .value) }}
{{- .value | int64 }}
{{- else }}
{{- $text := toString .value }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([kMGT]|[KMGT]i)?$" $text) }}
{{- fail (printf "%s: %q is not a size this chart can add up (a number of bytes, or e.g. 512Mi, 1Gi, 500M)" .key $text) }}
{{- end }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- $suffix := regexFind "[A-Za-z]+$" $text }}
{{- mulf (float64 (trimSuffix $suffix $text)) (index $units $suffix) | int64 }}
{{- end }}
{{- end }}

{{/*
sizeLimit of Triton's /dev/shm emptyDir: triton.shmSize (the python backend's tensors), plus
ensemble.besideTriton.shmSize when the ensemble's shared memory regions live there too.
*/}}
{{- define "pcam.triton.shmSize" -}}
{{- $triton := .Values.triton.shmSize }}
{{- if .Values.ensemble.besideTriton.enabled }}
{{- $bytes := add (include "pcam.quantityBytes" (dict "key" "triton.shmSize" "value" $triton)) (include "pcam.quantityBytes" (dict "key" "ensemble.besideTriton.shmSize" "value" .Values.ensemble.besideTriton.shmSize)) }}
{{- if eq (mod $bytes 1048576) 0 }}
{{- printf "%dMi" (div $bytes 1048576) }}
{{- else }}
{{- $bytes }}
{{- end }}
{{- else }}
{{- $triton }}
{{- end }}
{{- end }}

{{/*
ClusterIP Service of a platform service. Call with (dict "root" $ "component" "preprocess"), optionally
"podComponent" (the component whose pods it selects, default the component itself) and "targetPort"
(default `http`).
*/}}
{{- define "pcam.service.clusterIP" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "pcam.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pcam.componentLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "pcam.componentSelectorLabels" (dict "root" .root "component" (default .component .podComponent)) | nindent 4 }}
  ports:
    - name: http
      port: {{ index .root.Values .component "service" "port" }}
      targetPort: {{ default "http" .targetPort }}
      protocol: TCP
{{- end }}
