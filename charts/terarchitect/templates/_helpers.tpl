{{/* ----------------------------------------------------------------------------------------
Names
---------------------------------------------------------------------------------------- */}}

{{/* The chart name (nameOverride wins). */}}
{{- define "terarchitect.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: fullnameOverride, else <release>-<chart> (or <release> when it
already contains the chart name). Kept to 40 characters so suffixes fit in 63. */}}
{{- define "terarchitect.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "terarchitect.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "terarchitect.apiServer.fullname" -}}
{{- printf "%s-api-server" (include "terarchitect.fullname" .) }}
{{- end }}

{{- define "terarchitect.operator.fullname" -}}
{{- printf "%s-operator" (include "terarchitect.fullname" .) }}
{{- end }}

{{- define "terarchitect.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "terarchitect.fullname" .) }}
{{- end }}

{{/* The namespace of AgentJobs, agent Jobs and Secrets, the leader Lease and the operator's
Role: agents.namespace, else the release namespace. */}}
{{- define "terarchitect.agentsNamespace" -}}
{{- default .Release.Namespace .Values.agents.namespace }}
{{- end }}

{{- define "terarchitect.leaseName" -}}
{{- default (include "terarchitect.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Labels
---------------------------------------------------------------------------------------- */}}

{{- define "terarchitect.labels" -}}
helm.sh/chart: {{ include "terarchitect.chart" . }}
{{ include "terarchitect.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: terarchitect
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "terarchitect.selectorLabels" -}}
app.kubernetes.io/name: {{ include "terarchitect.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "terarchitect.componentLabels" -}}
{{ include "terarchitect.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "terarchitect.componentSelectorLabels" -}}
{{ include "terarchitect.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Service accounts
---------------------------------------------------------------------------------------- */}}

{{- define "terarchitect.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "terarchitect.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "terarchitect.apiServer.serviceAccountName" -}}
{{- if .Values.apiServer.serviceAccount.create }}
{{- default (include "terarchitect.apiServer.fullname" .) .Values.apiServer.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.apiServer.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The agents' ServiceAccount; empty when none is created or named (the operator then leaves
the pods on the namespace's default account, still without a mounted token). */}}
{{- define "terarchitect.agent.serviceAccountName" -}}
{{- if .Values.agents.serviceAccount.create }}
{{- default (printf "%s-agent" (include "terarchitect.fullname" .)) .Values.agents.serviceAccount.name }}
{{- else }}
{{- .Values.agents.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Images: repository:tag (tag defaults to appVersion) or repository@digest.
---------------------------------------------------------------------------------------- */}}

{{- define "terarchitect.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .ctx.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Database and secrets
---------------------------------------------------------------------------------------- */}}

{{/* "postgresql" (bundled), "external" (database.url or existingSecret) or "sqlite". */}}
{{- define "terarchitect.databaseMode" -}}
{{- if .Values.postgresql.enabled -}}
postgresql
{{- else if or .Values.database.url .Values.database.existingSecret -}}
external
{{- else -}}
sqlite
{{- end -}}
{{- end }}

{{/* The Secret the chart manages for credentials given as values or generated. */}}
{{- define "terarchitect.secretName" -}}
{{- include "terarchitect.fullname" . }}
{{- end }}

{{/* Whether the chart's own Secret has any key (non-empty output = yes). */}}
{{- define "terarchitect.secretNeeded" -}}
{{- if or (not .Values.workerApiKey.existingSecret) (not .Values.adminToken.existingSecret) (not .Values.secretKey.existingSecret) (and .Values.githubToken.value (not .Values.githubToken.existingSecret)) (and .Values.githubWebhook.value (not .Values.githubWebhook.existingSecret)) (and .Values.database.url (not .Values.postgresql.enabled)) -}}
true
{{- end -}}
{{- end }}

{{/* secretKeyRef of a credential: include with (dict "ctx" $ "cred" .Values.workerApiKey
"key" "TERARCHITECT_WORKER_API_KEY"). */}}
{{- define "terarchitect.secretKeyRef" -}}
secretKeyRef:
  {{- if .cred.existingSecret }}
  name: {{ .cred.existingSecret }}
  key: {{ .cred.existingSecretKey }}
  {{- else }}
  name: {{ include "terarchitect.secretName" .ctx }}
  key: {{ .key }}
  {{- end }}
{{- end }}

{{/* The DATABASE_URL env entry of the api-server (empty for SQLite). */}}
{{- define "terarchitect.databaseUrlEnv" -}}
{{- $mode := include "terarchitect.databaseMode" . -}}
{{- if eq $mode "postgresql" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "terarchitect.postgresql.fullname" . }}
      key: DATABASE_URL
{{- else if eq $mode "external" }}
- name: DATABASE_URL
  valueFrom:
    {{- include "terarchitect.secretKeyRef" (dict "ctx" . "cred" .Values.database "key" "DATABASE_URL") | nindent 4 }}
{{- end }}
{{- end }}

{{/* A checksum of the credential settings, as a pod annotation: pods roll when a credential
given as a value, or a referenced Secret's name, changes. Generated values are kept across
upgrades, so they do not change it. Changes inside Secrets you manage need a manual
`kubectl rollout restart`. */}}
{{- define "terarchitect.secretChecksum" -}}
{{- $creds := dict "workerApiKey" .Values.workerApiKey "adminToken" .Values.adminToken "githubToken" .Values.githubToken "githubWebhook" .Values.githubWebhook "secretKey" .Values.secretKey "database" (omit .Values.database "sqlite") "postgresql" .Values.postgresql.auth "postgresqlEnabled" .Values.postgresql.enabled -}}
{{- toJson $creds | sha256sum }}
{{- end }}

{{/* The api-server URL the operator uses. */}}
{{- define "terarchitect.apiUrl" -}}
{{- if .Values.operator.apiUrl -}}
{{- .Values.operator.apiUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "terarchitect.apiServer.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.apiServer.service.port) -}}
{{- end -}}
{{- end }}

{{/* The agent cache PVC name (empty = emptyDir). */}}
{{- define "terarchitect.agentCachePvc" -}}
{{- if .Values.agents.cache.existingClaim -}}
{{- .Values.agents.cache.existingClaim -}}
{{- else if .Values.agents.cache.create -}}
{{- printf "%s-agent-cache" (include "terarchitect.fullname" .) -}}
{{- end -}}
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Security contexts (restricted Pod Security level)
---------------------------------------------------------------------------------------- */}}

{{- define "terarchitect.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 65532 }}
runAsGroup: {{ .uid | default 65532 }}
fsGroup: {{ .uid | default 65532 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "terarchitect.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end }}

{{/* ----------------------------------------------------------------------------------------
Checks that the schema cannot express
---------------------------------------------------------------------------------------- */}}

{{- define "terarchitect.validate" -}}
{{- $mode := include "terarchitect.databaseMode" . -}}
{{- if and .Values.postgresql.enabled (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "database: set either postgresql.enabled (bundled PostgreSQL) or database.url/database.existingSecret (external PostgreSQL), not both" }}
{{- end }}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "database: set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and (eq $mode "sqlite") (gt (int .Values.apiServer.replicaCount) 1) }}
{{- fail "apiServer.replicaCount > 1 needs PostgreSQL: SQLite (the default when neither database.url, database.existingSecret nor postgresql.enabled is set) is a single file owned by one replica" }}
{{- end }}
{{- range $name := list "workerApiKey" "adminToken" "githubToken" "githubWebhook" "secretKey" }}
{{- $cred := index $.Values $name }}
{{- if and $cred.value $cred.existingSecret }}
{{- fail (printf "%s: set %s.value or %s.existingSecret, not both" $name $name $name) }}
{{- end }}
{{- end }}
{{- if ge (mulf .Values.operator.heartbeatIntervalSec 2.0) (float64 .Values.operator.jobLeaseSec) }}
{{- fail "operator.heartbeatIntervalSec must be under half of operator.jobLeaseSec" }}
{{- end }}
{{- if and .Values.operator.maxConcurrentAgentsPerProject (not .Values.operator.projectIds) }}
{{- fail "operator.maxConcurrentAgentsPerProject needs operator.projectIds (the projects to share the slots between)" }}
{{- end }}
{{- if and .Values.agents.cache.create .Values.agents.cache.existingClaim }}
{{- fail "agents.cache: set create or existingClaim, not both" }}
{{- end }}
{{- end }}
