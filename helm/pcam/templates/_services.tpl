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
        - name: {{ .component }}
          image: {{ include "pcam.image" (dict "root" $root "image" $values.image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ include "pcam.containerPort" .component }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "pcam.componentName" $component }}
          {{- include "pcam.containerSecurityContext" $root | nindent 10 }}
          {{- include "pcam.serviceProbes" $component | nindent 10 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- include "pcam.modelRepository.mount" $root | nindent 12 }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- include "pcam.modelRepository.volume" $root | nindent 8 }}
{{- end }}

{{/*
ClusterIP Service of a platform service. Call with (dict "root" $ "component" "preprocess").
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
    {{- include "pcam.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ index .root.Values .component "service" "port" }}
      targetPort: http
      protocol: TCP
{{- end }}
