{{/* The chart's name, or nameOverride. */}}
{{- define "datajuicer-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Names every object; the release name alone when it already contains the chart name. */}}
{{- define "datajuicer-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "datajuicer-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datajuicer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datajuicer-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "datajuicer-operator.labels" -}}
helm.sh/chart: {{ include "datajuicer-operator.chart" . }}
{{ include "datajuicer-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "datajuicer-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datajuicer-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "datajuicer-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What dj-operator does in a namespace it reconciles, verb by verb; nothing else.
docs/deploy.md maps every verb to the call that needs it, and tests/deploy/test_rbac.py
proves each one is required (the API refuses it once the verb is removed) and sufficient
(a job's whole lifecycle runs with this ServiceAccount's token).
*/}}
{{- define "datajuicer-operator.namespacedRules" -}}
- apiGroups: [datajuicer.io]
  resources: [datajuicerjobs]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [datajuicer.io]
  resources: [datajuicerjobs/status]
  verbs: [patch]
- apiGroups: [datajuicer.io]
  resources: [datajuicerjobs/finalizers]
  verbs: [update]
- apiGroups: [ray.io]
  resources: [rayclusters]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, create, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, create, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [list, create, delete]
{{- if and .Values.ha.enabled .Values.watchNamespaces }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
{{- end }}

{{/*
Cluster-scoped, in either mode: kopf watches CRDs to notice its resource (re)appear. Watching
given namespaces only, kopf also lists and watches namespaces: without that it retries the
listing for about a minute before it starts reconciling at all.
*/}}
{{- define "datajuicer-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- if and .Values.ha.enabled (not .Values.watchNamespaces) }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
