{{/* Name of every object; a release may override it with nameOverride. */}}
{{- define "intel-gpu-cdi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "intel-gpu-cdi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "intel-gpu-cdi.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "intel-gpu-cdi.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "intel-gpu-cdi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "intel-gpu-cdi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "intel-gpu-cdi.labels" -}}
{{ include "intel-gpu-cdi.selectorLabels" . }}
app.kubernetes.io/component: device-plugin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The port number at the end of metrics.address (":9400", "0.0.0.0:9400"). */}}
{{- define "intel-gpu-cdi.metricsPort" -}}
{{- last (splitList ":" .Values.metrics.address) | int -}}
{{- end -}}
