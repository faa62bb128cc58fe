{{/* The release-scoped name prefix. */}}
{{- define "uprox.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "uprox.labels" -}}
app.kubernetes.io/part-of: uprox
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "uprox.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The pod and container security settings every uprox pod runs with. */}}
{{- define "uprox.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "uprox.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The uprox kinds and what the operator does with them (in a ClusterRole or a Role). */}}
{{- define "uprox.operatorRules" -}}
- apiGroups: ["uprox.dev"]
  resources: ["providers", "services", "machinetokens", "policies", "budgets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["uprox.dev"]
  resources: ["providers/status", "services/status", "machinetokens/status", "policies/status", "budgets/status"]
  verbs: ["get", "patch", "update"]
# Secrets: metadata watch to see provider-key Secrets change, token Secrets (issued by the
# operator) in full, and reads of the Secrets Providers name. Create and update issue and rotate
# tokens; the operator never deletes a Secret (owner references do, with the MachineToken).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
