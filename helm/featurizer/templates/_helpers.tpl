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

{{/* Fields shared by the driver and the executors; call with (dict "pod" ... "root" $). */}}
{{- define "featurizer.pod" -}}
{{- $root := .root }}
{{- with .pod }}
cores: {{ int .cores }}
{{- with .coreRequest }}
coreRequest: {{ . | quote }}
{{- end }}
{{- with .coreLimit }}
coreLimit: {{ . | quote }}
{{- end }}
memory: {{ .memory | quote }}
memoryOverhead: {{ .memoryOverhead | quote }}
{{- end }}
serviceAccount: {{ $root.Values.serviceAccount.name }}
labels:
  {{- include "featurizer.labels" $root | nindent 2 }}
podSecurityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- with $root.Values.s3.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
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
{{- with .Values.sparkConf }}
sparkConf:
  {{- range $key, $value := . }}
  {{ $key | quote }}: {{ $value | toString | quote }}
  {{- end }}
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
  {{- include "featurizer.pod" (dict "pod" .Values.driver "root" .) | trim | nindent 2 }}
executor:
  instances: {{ int .Values.executor.instances }}
  {{- include "featurizer.pod" (dict "pod" .Values.executor "root" .) | trim | nindent 2 }}
{{- end -}}
