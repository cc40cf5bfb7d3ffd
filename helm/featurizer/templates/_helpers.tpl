{{/* Name of the application (and prefix of its pods): the release name unless overridden. */}}
{{- define "featurizer.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "featurizer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "featurizer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The job's options as spark-submit application arguments: every key of .Values.job becomes
`--kebab-case-key`, booleans are flags, lists repeat the flag, null is left out (the job's
default). Numbers go through toJson so that large integers are not printed as 1e+07.
This is what RunConfig.from_argv parses back (tests/k8s checks the round trip).
*/}}
{{- define "featurizer.arguments" -}}
{{- range $key, $value := .Values.job }}
{{- $flag := printf "--%s" (kebabcase $key) }}
{{- if kindIs "bool" $value }}
{{- if $value }}
- {{ $flag | quote }}
{{- end }}
{{- else if kindIs "slice" $value }}
{{- range $value }}
- {{ $flag | quote }}
- {{ . | quote }}
{{- end }}
{{- else if kindIs "string" $value }}
- {{ $flag | quote }}
- {{ $value | quote }}
{{- else if not (kindIs "invalid" $value) }}
- {{ $flag | quote }}
- {{ toJson $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* S3A settings; credentials come from the AWS SDK chain (IRSA, Pod Identity, env). */}}
{{- define "featurizer.hadoopConf" -}}
{{- $conf := dict
  "fs.s3a.aws.credentials.provider" "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
  "fs.s3.impl" "org.apache.hadoop.fs.s3a.S3AFileSystem"
  "fs.s3a.path.style.access" (toString .Values.s3.pathStyleAccess) }}
{{- with .Values.s3.endpoint }}
{{- $_ := set $conf "fs.s3a.endpoint" . }}
{{- $_ := set $conf "fs.s3a.connection.ssl.enabled" (toString (hasPrefix "https://" .)) }}
{{- end }}
{{- with .Values.s3.region }}
{{- $_ := set $conf "fs.s3a.endpoint.region" . }}
{{- end }}
{{- range $key, $value := merge (deepCopy .Values.hadoopConf) $conf }}
{{ $key | quote }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Fields of the driver or the executors; call with (dict "pod" .Values.driver "root" $).
The top-level nodeSelector/tolerations/labels apply to both roles; each role adds its own. */}}
{{- define "featurizer.pod" -}}
{{- $root := .root }}
{{- $pod := .pod }}
cores: {{ int $pod.cores }}
{{- with $pod.coreRequest }}
coreRequest: {{ . | quote }}
{{- end }}
{{- with $pod.coreLimit }}
coreLimit: {{ . | quote }}
{{- end }}
memory: {{ $pod.memory | quote }}
memoryOverhead: {{ $pod.memoryOverhead | quote }}
serviceAccount: {{ $root.Values.serviceAccount.name }}
labels:
  {{- include "featurizer.labels" $root | nindent 2 }}
  {{- with $pod.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := deepCopy ($pod.annotations | default dict) }}
{{- if and .driver $root.Values.metrics.prometheus }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" "4040" }}
{{- $_ := set $annotations "prometheus.io/path" "/metrics/prometheus" }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
podSecurityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- with $root.Values.s3.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- with merge (deepCopy ($pod.nodeSelector | default dict)) $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat $root.Values.tolerations ($pod.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $pod.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Spark properties the chart's own values imply (decommissioning, event logs, metrics);
sparkConf is merged over them, so a user's setting always wins. */}}
{{- define "featurizer.sparkConf" -}}
{{- $conf := dict }}
{{- with .Values.decommission }}
{{- if .enabled }}
{{- $_ := set $conf "spark.decommission.enabled" "true" }}
{{- $_ := set $conf "spark.storage.decommission.enabled" "true" }}
{{- $_ := set $conf "spark.storage.decommission.shuffleBlocks.enabled" "true" }}
{{- $_ := set $conf "spark.storage.decommission.rddBlocks.enabled" "true" }}
{{- $_ := set $conf "spark.executor.decommission.forceKillTimeout" .forceKillTimeout }}
{{- $_ := set $conf "spark.kubernetes.executor.terminationGracePeriodSeconds" (toString (int .gracePeriodSeconds)) }}
{{- end }}
{{- end }}
{{- with .Values.eventLog }}
{{- if .enabled }}
{{- if not .dir }}
{{- fail "eventLog.enabled needs eventLog.dir, e.g. s3a://my-bucket/spark-events" }}
{{- end }}
{{- $_ := set $conf "spark.eventLog.enabled" "true" }}
{{- $_ := set $conf "spark.eventLog.dir" .dir }}
{{- $_ := set $conf "spark.eventLog.rolling.enabled" (toString .rolling) }}
{{- $_ := set $conf "spark.eventLog.rolling.maxFileSize" .rollingMaxFileSize }}
{{- end }}
{{- end }}
{{- if .Values.metrics.prometheus }}
{{- $_ := set $conf "spark.ui.prometheus.enabled" "true" }}
{{- $_ := set $conf "spark.metrics.conf.*.sink.prometheusServlet.class" "org.apache.spark.metrics.sink.PrometheusServlet" }}
{{- $_ := set $conf "spark.metrics.conf.*.sink.prometheusServlet.path" "/metrics/prometheus" }}
{{- $_ := set $conf "spark.metrics.conf.master.sink.prometheusServlet.path" "/metrics/master/prometheus" }}
{{- $_ := set $conf "spark.metrics.conf.applications.sink.prometheusServlet.path" "/metrics/applications/prometheus" }}
{{- end }}
{{- range $key, $value := merge (deepCopy .Values.sparkConf) $conf }}
{{ $key | quote }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* A scheduled run writes job.output again every time: refuse that unless each run gets
an output of its own ({app} or {date} in it), adds to one (incremental) or overwrites on
purpose. */}}
{{- define "featurizer.checkSchedule" -}}
{{- if .Values.schedule.enabled }}
{{- $fresh := or (contains "{app}" .Values.job.output) (contains "{date}" .Values.job.output) }}
{{- $overwrites := and .Values.job.overwrite (not .Values.job.resume) }}
{{- if not (or $fresh $overwrites .Values.job.incremental) }}
{{- fail "schedule.enabled: every run would write the same job.output (the second is refused as already complete): put {app} in it (the run's name, e.g. s3a://bucket/features/{app}) or {date}, set job.incremental: true (each run adds the new images), or set job.overwrite: true and job.resume: null" }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The SparkApplication spec (also the ScheduledSparkApplication's template). */}}
{{- define "featurizer.appSpec" -}}
type: Python
pythonVersion: "3"
mode: cluster
image: {{ include "featurizer.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - {{ .name | quote }}
  {{- end }}
{{- end }}
mainApplicationFile: {{ .Values.mainApplicationFile | quote }}
sparkVersion: {{ .Values.sparkVersion | quote }}
arguments:
  {{- include "featurizer.arguments" . | trim | nindent 2 }}
{{- with include "featurizer.sparkConf" . | trim }}
sparkConf:
  {{- . | nindent 2 }}
{{- end }}
hadoopConf:
  {{- include "featurizer.hadoopConf" . | trim | nindent 2 }}
restartPolicy:
  {{- toYaml .Values.restartPolicy | nindent 2 }}
{{- with .Values.timeToLiveSeconds }}
timeToLiveSeconds: {{ int64 . }}
{{- end }}
{{- with .Values.dynamicAllocation }}
dynamicAllocation:
  enabled: {{ .enabled }}
  {{- if .enabled }}
  initialExecutors: {{ int .initialExecutors }}
  minExecutors: {{ int .minExecutors }}
  maxExecutors: {{ int .maxExecutors }}
  shuffleTrackingEnabled: true
  {{- end }}
{{- end }}
driver:
  {{- include "featurizer.pod" (dict "pod" .Values.driver "root" . "driver" true) | trim | nindent 2 }}
executor:
  instances: {{ int .Values.executor.instances }}
  {{- include "featurizer.pod" (dict "pod" .Values.executor "root" .) | trim | nindent 2 }}
{{- end -}}
