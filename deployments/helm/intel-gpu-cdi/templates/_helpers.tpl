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

{{/* The DRA driver's objects: the release's name with -dra. */}}
{{- define "intel-gpu-cdi.draFullname" -}}
{{- printf "%s-dra" (include "intel-gpu-cdi.fullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{/* Other than the device plugin's, so neither DaemonSet's selector matches the other's pods. */}}
{{- define "intel-gpu-cdi.draSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-dra" (include "intel-gpu-cdi.name" . | trunc 59 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "intel-gpu-cdi.draLabels" -}}
{{ include "intel-gpu-cdi.draSelectorLabels" . }}
app.kubernetes.io/component: dra-driver
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference: repository:tag, or repository@sha256:... for a digest; the tag defaults to the appVersion. Takes (list repository tag appVersion). */}}
{{- define "intel-gpu-cdi.image" -}}
{{- $tag := index . 1 | default (index . 2) -}}
{{- printf "%s%s%s" (index . 0) (ternary "@" ":" (hasPrefix "sha256:" $tag)) $tag -}}
{{- end -}}

{{/*
The pod's affinity: the user's, with the kubelet-plugin label requirement
added to every required node selector term (terms are ORed, so a term
without it would let the pod onto the other plugin's nodes). Takes (dict
"affinity" <the user's> "operator" "In"|"NotIn").
*/}}
{{- define "intel-gpu-cdi.affinity" -}}
{{- $require := dict "key" "gpu.intel.com/kubelet-plugin" "operator" .operator "values" (list "dra") -}}
{{- $affinity := deepCopy (.affinity | default dict) -}}
{{- $node := get $affinity "nodeAffinity" | default dict -}}
{{- $required := get $node "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $terms := list -}}
{{- range (get $required "nodeSelectorTerms" | default (list dict)) -}}
{{- $term := deepCopy . -}}
{{- $_ := set $term "matchExpressions" (append (get $term "matchExpressions" | default list) $require) -}}
{{- $terms = append $terms $term -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $terms -}}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $node -}}
{{- toYaml $affinity -}}
{{- end -}}

{{/* The kubelet's plugins_registry beside its device-plugin dir, where the device plugin looks for a live DRA driver. */}}
{{- define "intel-gpu-cdi.registryBeside" -}}
{{- printf "%s/plugins_registry" (dir (trimSuffix "/" .Values.kubeletSocketDir)) -}}
{{- end -}}
