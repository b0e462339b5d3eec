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

{{/* The ServiceAccount the operator runs as: made by the chart, or one that exists. */}}
{{- define "agentworker-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentworker-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from its parts (a dict: registry, repository, tag, digest, appVersion),
     as KEDA's chart makes its own: registry/repository joined as they are (the repository alone
     when the registry is empty), then @digest when set, else :tag (appVersion when empty). */}}
{{- define "agentworker-operator.imageRef" -}}
{{- $name := .repository -}}
{{- if .registry -}}
{{- $name = printf "%s/%s" .registry .repository -}}
{{- end -}}
{{- if .digest -}}
{{- printf "%s@%s" $name .digest -}}
{{- else -}}
{{- printf "%s:%s" $name (.tag | default .appVersion) -}}
{{- end -}}
{{- end -}}

{{/* The operator image (image.*), which `helm test` runs too. */}}
{{- define "agentworker-operator.image" -}}
{{- $parts := pick .Values.image "registry" "repository" "tag" "digest" -}}
{{- $_ := set $parts "appVersion" .Chart.AppVersion -}}
{{- include "agentworker-operator.imageRef" $parts -}}
{{- end -}}

{{/* The companion's image (companionImage.*, `--companion-image`): on image.registry unless it
     names a registry of its own; the operator image's repository, tag and digest unless it
     names a repository, tag or digest of its own. */}}
{{- define "agentworker-operator.companionImage" -}}
{{- $own := .Values.companionImage -}}
{{- $parts := pick .Values.image "repository" "tag" "digest" -}}
{{- if or $own.repository $own.tag $own.digest -}}
{{- $parts = dict "repository" ($own.repository | default .Values.image.repository) "tag" $own.tag "digest" $own.digest -}}
{{- end -}}
{{- $_ := set $parts "registry" ($own.registry | default .Values.image.registry) -}}
{{- $_ = set $parts "appVersion" .Chart.AppVersion -}}
{{- include "agentworker-operator.imageRef" $parts -}}
{{- end -}}

{{/* Name of the leader Lease: one per release, so two releases never share one. With
     sharding.shards above 1, the base of the shards' Leases (`agentworker-operator.leaseNames`). */}}
{{- define "agentworker-operator.leaseName" -}}
{{- include "agentworker-operator.fullname" . -}}
{{- end -}}

{{/* The release's Leases, as a YAML flow list: the leader Lease, or one per shard
     (`<leaseName>-shard-<i>`, the operator's `sharding.lease_name`). */}}
{{- define "agentworker-operator.leaseNames" -}}
{{- $base := include "agentworker-operator.leaseName" . -}}
{{- $shards := int .Values.sharding.shards -}}
{{- if le $shards 1 -}}
[{{ $base }}]
{{- else -}}
{{- $names := list -}}
{{- range $index := until $shards -}}
{{- $names = append $names (printf "%s-shard-%d" $base $index) -}}
{{- end -}}
[{{ join ", " $names }}]
{{- end -}}
{{- end -}}

{{/* Operator replicas: replicaCount, else 2 (one standby), or shards + 1 with sharding. Fails
     when there are fewer replicas than shards: a shard without a process stays unhandled. */}}
{{- define "agentworker-operator.replicas" -}}
{{- $shards := int .Values.sharding.shards -}}
{{- $replicas := ternary 2 (add1 $shards) (le $shards 1) -}}
{{- if not (kindIs "invalid" .Values.replicaCount) -}}
{{- $replicas = int .Values.replicaCount -}}
{{- end -}}
{{- if and (gt $shards 1) (lt (int $replicas) $shards) -}}
{{- fail (printf "replicaCount %d is below sharding.shards %d: each shard needs a replica to hold its Lease (set replicaCount to %d or more; %d keeps one standby)" (int $replicas) $shards $shards (add1 $shards)) -}}
{{- end -}}
{{- $replicas -}}
{{- end -}}

{{/* The namespaced rules of the operator: exactly the calls it makes (handlers, kube, sync). */}}
{{/* The Secret holding the release's control key (`--control-key-secret`). */}}
{{- define "agentworker-operator.controlKeyName" -}}
{{ include "agentworker-operator.fullname" . }}-control-key
{{- end -}}

{{- define "agentworker-operator.namespacedRules" -}}
# Watch AgentWorkers; kopf keeps its bookkeeping in their annotations.
- apiGroups: [agentworker.dev]
  resources: [agentworkers]
  verbs: [get, list, watch, patch]
- apiGroups: [agentworker.dev]
  resources: [agentworkers/status]
  verbs: [get, patch]
# Children carry blockOwnerDeletion: under OwnerReferencesPermissionEnforcement (on in OpenShift)
# setting it needs update on the owner's finalizers.
- apiGroups: [agentworker.dev]
  resources: [agentworkers/finalizers]
  verbs: [update]
# Server-side apply of the children (create when missing), and watching Deployments.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# delete: the budget it made goes when spec.disruptionBudget.enabled turns false (only while the
# AgentWorker controls it).
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
# Secrets are written, never read: each AgentWorker's control Secret holds a token the operator
# derives from its control key (in the release namespace), and the credentials Secret reaches
# pods by reference only. An existing control Secret is rewritten with a JSON patch whose first
# op tests that the AgentWorker owns it (patch, not update: a Secret of that name that someone
# else made is refused by the API server, never overwritten). Call recovery alone needs the
# LiveKit key and secret: opt in with rbac.readCredentialSecrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch]
{{- if .Values.rbac.readCredentialSecrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
# Worker pods (watched with a label selector, listed again when the watch looks stale): a
# crash loop, a failed image pull, and the annotations that protect calls
# (pod-deletion-cost, karpenter.sh/do-not-disrupt). The operator deletes no pod: the
# ReplicaSet removes the workers a scale-down chose.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* The cluster-scoped reads of kopf: CRDs (to start watching AgentWorkers once the CRD exists)
     and namespaces (to follow the watched ones): read-only, no object content beyond metadata. */}}
{{- define "agentworker-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}

{{/* The labels of one alert of the PrometheusRule (a dict: alert, its values; rule,
     prometheus.prometheusRule): its severity, then prometheusRule.alertLabels (but severity). */}}
{{- define "agentworker-operator.alertLabels" -}}
severity: {{ .alert.severity | quote }}
{{- with omit .rule.alertLabels "severity" }}
{{ toYaml . }}
{{- end }}
{{- end -}}
