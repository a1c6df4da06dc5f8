{{/*
The whole-slide Job (templates/slides/job.yaml): `pcam slide predict` in the training image, pod I of
N scoring the slides at positions I, I+N, I+2N... of slideJob.slides against the release's gateway.
*/}}

{{/*
The number of shards (the Job's completions): slideJob.shards, 0 = one per slide.
*/}}
{{- define "pcam.slideJob.shards" -}}
{{- $job := .Values.slideJob }}
{{- if $job.shards }}{{ int $job.shards }}{{ else }}{{ len $job.slides }}{{ end }}
{{- end }}

{{/*
A path under a mount point, with `$` doubled: Kubernetes expands $(NAME) in args, and $$ is a plain $.
Call with (list "/slides" "a/b.svs").
*/}}
{{- define "pcam.slideJob.path" -}}
{{- printf "%s/%s" (index . 0) (index . 1) | clean | replace "$" "$$" }}
{{- end }}

{{/*
"true" when slideJob.outputVolume names a volume: the results then go to /results, else to /slides.
*/}}
{{- define "pcam.slideJob.hasOutputVolume" -}}
{{- $out := .Values.slideJob.outputVolume }}
{{- if or $out.existingClaim $out.volume }}true{{ end }}
{{- end }}

{{/*
Settings the schema cannot check across keys; each failure names the values to change.
*/}}
{{- define "pcam.slideJob.check" -}}
{{- $job := .Values.slideJob }}
{{- $shards := int (include "pcam.slideJob.shards" .) }}
{{- if gt $shards (len $job.slides) }}
{{- fail (printf "slideJob.shards (%d) cannot exceed the number of slideJob.slides (%d): a shard without a slide has nothing to score" $shards (len $job.slides)) }}
{{- end }}
{{- $stems := dict }}
{{- range $job.slides }}
{{- $file := base . }}
{{- $stem := trimSuffix (ext $file) $file }}
{{- if hasKey $stems $stem }}
{{- fail (printf "slideJob.slides %s and %s share the name %q: their outputs (<name>.summary.json, ...) and checkpoints in slideJob.output would collide" (get $stems $stem) . $stem) }}
{{- end }}
{{- $_ := set $stems $stem . }}
{{- end }}
{{- range $name, $volume := dict "slideJob.volume" $job.volume "slideJob.outputVolume" $job.outputVolume }}
{{- if and $volume.existingClaim $volume.volume }}
{{- fail (printf "%s: set existingClaim or volume, not both" $name) }}
{{- end }}
{{- end }}
{{- if not (or $job.volume.existingClaim $job.volume.volume) }}
{{- fail "slideJob.volume.existingClaim or slideJob.volume.volume is required with slideJob.enabled: the volume holding the slides" }}
{{- end }}
{{- if and .Values.gateway.apiKeys.existingSecret (not $job.apiKeySecret) }}
{{- fail "slideJob.apiKeySecret is required while gateway.apiKeys.existingSecret is set: the gateway refuses requests without a key" }}
{{- end }}
{{- $maxImages := int (default 256 .Values.shared.maxImages) }}
{{- if and (not (kindIs "invalid" $job.batch)) (gt (int $job.batch) $maxImages) }}
{{- fail (printf "slideJob.batch (%d) exceeds the patches the gateway takes per request (shared.maxImages: %d)" (int $job.batch) $maxImages) }}
{{- end }}
{{- if not (kindIs "invalid" $job.backoffLimitPerIndex) }}
{{- if semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "slideJob.backoffLimitPerIndex needs Kubernetes >= 1.29 (this cluster: %s): unset it to use slideJob.backoffLimit" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- else if not (kindIs "invalid" $job.maxFailedIndexes) }}
{{- fail "slideJob.maxFailedIndexes needs slideJob.backoffLimitPerIndex" }}
{{- end }}
{{- if and (not (kindIs "invalid" $job.maxFailedIndexes)) (ge (int $job.maxFailedIndexes) $shards) }}
{{- fail (printf "slideJob.maxFailedIndexes (%d) must be below the number of shards (%d)" (int $job.maxFailedIndexes) $shards) }}
{{- end }}
{{- end }}

{{/*
A volume of the Job's pods: a claim or an inline source. Call with (dict "name" "slides" "values" .Values.slideJob.volume).
*/}}
{{- define "pcam.slideJob.volume" -}}
- name: {{ .name }}
{{- if .values.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .values.existingClaim }}
{{- else }}
  {{- toYaml .values.volume | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The Job's fields that Kubernetes does not let change on an existing Job: completions, completion mode,
backoffLimitPerIndex, podFailurePolicy and the pod template. The Job's name carries their hash.
*/}}
{{- define "pcam.slideJob.spec" -}}
{{- $job := .Values.slideJob }}
{{- $component := dict "root" . "component" "slides" "values" $job }}
{{- $shards := include "pcam.slideJob.shards" . }}
{{- $outputVolume := include "pcam.slideJob.hasOutputVolume" . }}
{{- $output := include "pcam.slideJob.path" (list (ternary "/results" "/slides" (not (empty $outputVolume))) $job.output) }}
completionMode: Indexed
completions: {{ $shards }}
{{- if not (kindIs "invalid" $job.backoffLimitPerIndex) }}
backoffLimitPerIndex: {{ $job.backoffLimitPerIndex }}
{{- end }}
# A pod evicted by a node drain or preempted is retried without counting as a failure.
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  metadata:
    labels:
      {{- include "pcam.componentLabels" $component | nindent 6 }}
    {{- with $job.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    {{- include "pcam.podCommon" $component | nindent 4 }}
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    terminationGracePeriodSeconds: {{ $job.terminationGracePeriodSeconds }}
    containers:
      - name: slides
        image: {{ include "pcam.image" (dict "root" . "image" $job.image) }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: ["pcam"]
        args:
          - slide
          - predict
          {{- range $job.slides }}
          - {{ include "pcam.slideJob.path" (list "/slides" .) | quote }}
          {{- end }}
          - --url
          - {{ include "pcam.gateway.url" . | quote }}
          - -o
          - {{ $output | quote }}
          - --operating-point
          - {{ $job.operatingPoint | quote }}
          # This pod's share: its completion index (SLIDE_SHARD) out of the Job's completions.
          - --shard
          - {{ printf "$(SLIDE_SHARD)/%s" $shards | quote }}
          {{- range $option := list "concurrency" "batch" "stride" "mpp" }}
          {{- $value := index $job $option }}
          {{- if not (kindIs "invalid" $value) }}
          - {{ printf "--%s" $option }}
          - {{ $value | toString | quote }}
          {{- end }}
          {{- end }}
          {{- range $job.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          - name: SLIDE_SHARD
            valueFrom:
              fieldRef:
                fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
          {{- with $job.apiKeySecret }}
          - name: PCAM_API_KEY
            valueFrom:
              secretKeyRef:
                name: {{ . }}
                key: {{ $job.apiKeySecretKey }}
          {{- end }}
        {{- include "pcam.containerSecurityContext" . | nindent 8 }}
        resources:
          {{- toYaml $job.resources | nindent 10 }}
        volumeMounts:
          - name: slides
            mountPath: /slides
            {{- if $outputVolume }}
            readOnly: true
          - name: results
            mountPath: /results
            {{- end }}
          - name: tmp
            mountPath: /tmp
          # HOME (/work in the image) on a read-only root filesystem.
          - name: home
            mountPath: /work
    volumes:
      {{- include "pcam.slideJob.volume" (dict "name" "slides" "values" $job.volume) | nindent 6 }}
      {{- if $outputVolume }}
      {{- include "pcam.slideJob.volume" (dict "name" "results" "values" $job.outputVolume) | nindent 6 }}
      {{- end }}
      - name: tmp
        emptyDir:
          sizeLimit: {{ $job.tmpSizeLimit }}
      - name: home
        emptyDir:
          sizeLimit: 64Mi
{{- end }}
