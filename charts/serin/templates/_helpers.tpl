{{/* The release's full name, at most 63 characters. */}}
{{- define "serin.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "serin.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "serin.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "serin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "serin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The routing provider: `provider` wins over Flagger's `meshProvider`. */}}
{{- define "serin.provider" -}}
{{- default .Values.meshProvider .Values.provider -}}
{{- end -}}

{{- define "serin.replicas" -}}
{{- if .Values.sharding.enabled -}}{{ .Values.sharding.replicaCount }}{{- else if .Values.leaderElection.enabled -}}{{ .Values.leaderElection.replicaCount }}{{- else -}}1{{- end -}}
{{- end -}}

{{/* The Secret holding the notification URLs given as values (none when every one comes from an existing Secret). */}}
{{- define "serin.notificationSecret" -}}
{{- printf "%s-notifications" (include "serin.fullname" .) -}}
{{- end -}}
