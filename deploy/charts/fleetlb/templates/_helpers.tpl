{{/* Labels of every object. */}}
{{- define "fleetlb.labels" -}}
app.kubernetes.io/part-of: fleetlb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector of the manager's pods (immutable in the Deployment: never change it). */}}
{{- define "fleetlb.selector" -}}
app.kubernetes.io/name: fleetlb-manager
{{- end -}}

{{/* registry/repository:tag or @digest. */}}
{{- define "fleetlb.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" -}}
{{- if .Values.image.digest -}}
{{ $repo }}@{{ .Values.image.digest }}
{{- else -}}
{{ $repo }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* host:port Envoy pods dial. */}}
{{- define "fleetlb.xdsAddress" -}}
{{- .Values.xds.fleetAddress | default (printf "fleetlb-manager.%s.svc:%d" .Release.Namespace (int .Values.xds.port)) -}}
{{- end -}}
