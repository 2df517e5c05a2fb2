{{/* Labels of every object. */}}
{{- define "ccm.labels" -}}
app.kubernetes.io/part-of: fleetlb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector of the ccm's pods (immutable in the Deployment: never change it). */}}
{{- define "ccm.selector" -}}
app.kubernetes.io/name: fleetlb-ccm
{{- end -}}

{{/* registry/repository:tag or @digest. */}}
{{- define "ccm.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" -}}
{{- if .Values.image.digest -}}
{{ $repo }}@{{ .Values.image.digest }}
{{- else -}}
{{ $repo }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
