{{/* Name of the operator's objects: the release name, unless fullnameOverride says otherwise. */}}
{{- define "agentworker-operator.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "agentworker-operator.selectorLabels" -}}
app.kubernetes.io/name: agentworker-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Recommended labels on everything the chart makes. */}}
{{- define "agentworker-operator.labels" -}}
{{ include "agentworker-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: agentworker
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "agentworker-operator.serviceAccountName" -}}
{{- default (include "agentworker-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}
