{{/*
The release's full name, which names every object (and the operator's
ClusterRole, so releases never share one): fullnameOverride, or the release
name with the chart's appended unless it already contains it.
*/}}
{{- define "lfo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lfo.serviceAccountName" -}}
{{- default (include "lfo.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "lfo.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lfo.labels" -}}
{{ include "lfo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lotus-follower
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lfo.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
The operator's rules, the same in the ClusterRole and in each namespace's Role
(they are manifests/install.yaml's, which the operator's end-to-end tests run
under): read the resource into its cache and write only its status; watch the
children into caches and apply them server-side (create, patch); delete only
the kinds a spec change can remove; bind (never hold) the ingester's Lease rights.
*/}}
{{- define "lfo.rules" -}}
- apiGroups: [lotus-follower.io]
  resources: [lotusfollowerclusters]
  verbs: [list, watch]
- apiGroups: [lotus-follower.io]
  resources: [lotusfollowerclusters/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [serviceaccounts, services]
  verbs: [list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
# The ingester's RoleBinding, to the ClusterRole lotus-follower-ingester: RBAC
# lets the operator grant it because it may bind that one ClusterRole, not
# because it holds its verbs.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [lotus-follower-ingester]
# The ingester's Lease: created once, then the ingester's. (Create cannot be
# limited by name; no update, patch or delete of any Lease but its own election
# Lease.)
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [list, watch, create]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
