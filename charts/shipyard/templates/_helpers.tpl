{{/*
Shared names, labels and checks. Object names are fixed (not derived from the release name): compiled workloads
and the operator find each other by these names (shipyard-gateway.shipyard-system.svc, shipyard-admin-token).
*/}}

{{/* The namespace check: every template includes this, so a wrong namespace fails any render. */}}
{{- define "shipyard.checkNamespace" -}}
{{- if and (ne .Release.Namespace "shipyard-system") (not .Values.allowOtherNamespace) -}}
{{- fail (printf "Shipyard must be installed into the namespace \"shipyard-system\" (got %q): compiled workloads reach the gateway at http://shipyard-gateway.shipyard-system.svc. Use --namespace shipyard-system, or set allowOtherNamespace=true if you provide that address yourself." .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "shipyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries; pass (dict "ctx" $ "component" "gateway"). */}}
{{- define "shipyard.labels" -}}
helm.sh/chart: {{ include "shipyard.chart" .ctx }}
{{ include "shipyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: shipyard
{{- end -}}

{{/*
Selector labels. The gateway pods are component "gateway": the NetworkPolicy compiled for every Endpoint, App
and Workspace admits pods labelled app.kubernetes.io/name=shipyard, app.kubernetes.io/component=gateway (in a
namespace labelled shipyard.dev/system=true). The operator pods are component "operator".
*/}}
{{- define "shipyard.selectorLabels" -}}
app.kubernetes.io/name: shipyard
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "shipyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Whether the chart runs its own MLflow server. */}}
{{- define "shipyard.mlflowEnabled" -}}
{{- if and .Values.tracking.enabled (not .Values.tracking.externalUri) -}}true{{- end -}}
{{- end -}}

{{/* The tracking URI given to the operator; empty when tracking is off. */}}
{{- define "shipyard.trackingUri" -}}
{{- if .Values.tracking.externalUri -}}
{{- .Values.tracking.externalUri -}}
{{- else if .Values.tracking.enabled -}}
{{- printf "http://shipyard-mlflow.%s.svc:5000" .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The admin token Secret the operator reads. */}}
{{- define "shipyard.adminSecretName" -}}
{{- .Values.adminToken.existingSecret | default "shipyard-admin-token" -}}
{{- end -}}

{{- define "shipyard.adminSecretKey" -}}
{{- if .Values.adminToken.existingSecret -}}{{ .Values.adminToken.existingSecretKey | default "token" }}{{- else -}}token{{- end -}}
{{- end -}}

{{/* Cluster-scoped names must not collide between two installs (allowOtherNamespace). */}}
{{- define "shipyard.clusterName" -}}
{{- if eq .Release.Namespace "shipyard-system" -}}shipyard{{- else -}}{{ printf "shipyard-%s" .Release.Namespace | trunc 63 }}{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every pod and container of the chart. */}}
{{- define "shipyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "shipyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1000
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The gateway URL given to the operator (--gateway-url); empty: the operator's default (the in-cluster Service). */}}
{{- define "shipyard.gatewayUrl" -}}
{{- $ing := .Values.gateway.ingress -}}
{{- if .Values.gateway.url -}}
{{- .Values.gateway.url -}}
{{- else if and $ing.enabled $ing.host -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty $ing.tls))) $ing.host -}}
{{- end -}}
{{- end -}}
