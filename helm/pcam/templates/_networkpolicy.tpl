{{/*
Egress to the OTLP collector, when tracing is on.
*/}}
{{- define "pcam.networkPolicy.tracingEgress" -}}
{{- if .Values.tracing.enabled -}}
- to:
    {{- toYaml .Values.networkPolicy.tracing.to | nindent 4 }}
  ports:
    - port: {{ .Values.networkPolicy.tracing.port }}
      protocol: TCP
{{- end }}
{{- end }}

{{/*
Egress of the object-storage init container (the policy applies to the whole pod).
*/}}
{{- define "pcam.networkPolicy.objectStorageEgress" -}}
{{- if eq .Values.modelRepository.source "objectStorage" -}}
- to:
    {{- toYaml .Values.networkPolicy.objectStorage.to | nindent 4 }}
  ports:
    {{- toYaml .Values.networkPolicy.objectStorage.ports | nindent 4 }}
{{- end }}
{{- end }}

{{/*
Prometheus scraping a metrics port. Call with (dict "root" $ "port" 8002).
*/}}
{{- define "pcam.networkPolicy.metricsIngress" -}}
{{- with .root.Values.networkPolicy.metrics.from -}}
- from:
    {{- toYaml . | nindent 4 }}
  ports:
    - port: {{ $.port }}
      protocol: TCP
{{- end }}
{{- end }}
