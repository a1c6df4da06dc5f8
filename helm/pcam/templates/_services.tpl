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
