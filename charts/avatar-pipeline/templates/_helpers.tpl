{{/* Names and references shared by the templates and by files/workflowtemplate.yaml (rendered with tpl). */}}

{{- define "avatar-pipeline.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Full reference of one image: (list $ "tracker") -> registry/repository:tag */}}
{{- define "avatar-pipeline.image" -}}
{{- $root := index . 0 -}}
{{- $img := index $root.Values.images (index . 1) -}}
{{- $registry := $img.registry | default $root.Values.images.registry -}}
{{- $tag := $img.tag | default $root.Values.images.tag | default $root.Chart.AppVersion -}}
{{- if $registry -}}{{ printf "%s/%s:%s" $registry $img.repository $tag }}{{- else -}}{{ printf "%s:%s" $img.repository $tag }}{{- end -}}
{{- end -}}

{{- define "avatar-pipeline.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}

{{/* The Secret holding the S3 keys: the user's existingSecret, or the one this chart creates. */}}
{{- define "avatar-pipeline.s3SecretName" -}}
{{- .Values.s3.existingSecret | default .Values.s3.credentials.secretName -}}
{{- end -}}

{{/* s3://bucket[/prefix]: the --store of every pod. */}}
{{- define "avatar-pipeline.storeUri" -}}
{{- $prefix := trimAll "/" .Values.s3.prefix -}}
{{- if $prefix -}}{{ printf "s3://%s/%s" .Values.s3.bucket $prefix }}{{- else -}}{{ printf "s3://%s" .Values.s3.bucket }}{{- end -}}
{{- end -}}

{{/* Argo's artifact endpoint: host[:port] without scheme (AWS when empty). */}}
{{- define "avatar-pipeline.artifactEndpoint" -}}
{{- if .Values.s3.endpoint -}}{{ .Values.s3.endpoint | trimPrefix "http://" | trimPrefix "https://" | trimSuffix "/" }}{{- else -}}s3.amazonaws.com{{- end -}}
{{- end -}}
