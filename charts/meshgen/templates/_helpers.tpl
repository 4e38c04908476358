{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "meshgen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meshgen.fullname" -}}
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

{{/* "<fullname>-<component>", kept within 63 characters. Call with (list $ "api"). */}}
{{- define "meshgen.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "meshgen.fullname" $root | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" }}
{{- end }}

{{- define "meshgen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshgen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------ */}}
{{- define "meshgen.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "meshgen.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "meshgen.labels" -}}
{{- $root := index . 0 -}}
{{ include "meshgen.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Values.image.tag | default $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: meshgen
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name ($root.Chart.Version | replace "+" "_") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Images ------------------------------------------------------------------------------ */}}
{{- define "meshgen.imageRef" -}}
{{- if .digest }}{{ printf "%s@%s" .repository .digest }}{{ else }}{{ printf "%s:%s" .repository .tag }}{{ end }}
{{- end }}

{{- define "meshgen.image" -}}
{{- include "meshgen.imageRef" (dict "repository" .Values.image.repository "tag" (.Values.image.tag | default .Chart.AppVersion) "digest" .Values.image.digest) }}
{{- end }}

{{/* Redis ------------------------------------------------------------------------------- */}}
{{- define "meshgen.redisEnv" -}}
{{- if .Values.redis.enabled }}
- name: MESHGEN_REDIS_URL
  value: {{ printf "redis://%s:%d/0" (include "meshgen.componentName" (list . "redis")) (int .Values.redis.port) | quote }}
{{- else if .Values.redis.external.existingSecret }}
- name: MESHGEN_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.key }}
{{- else }}
- name: MESHGEN_REDIS_URL
  value: {{ required "redis.external.url (or redis.external.existingSecret) is required when redis.enabled is false" .Values.redis.external.url | quote }}
{{- end }}
{{- end }}

{{/* Secrets ------------------------------------------------------------------------------
Which secrets each component mounts:
  api:    API tokens, webhook secrets, the Argo CD token (rollout actions)
  worker: the forge token, the Argo CD token (the Argo CD poll runs as a worker task), and every
          git credential (git token, blueprints token, SSH key + passphrase + known_hosts, GitHub
          App key): only the worker fetches and pushes (`meshgen doctor` runs there too)
  beat:   none (it only schedules)
*/}}
{{- define "meshgen.secretNames" -}}
{{- $c := index . 1 -}}
{{- if eq $c "api" -}}apiReadTokens apiWriteTokens {{ include "meshgen.webhookSecretNames" (index . 0) }} argocdToken
{{- else if eq $c "worker" -}}forgeToken argocdToken gitToken blueprintsToken gitSshKey gitSshKeyPassphrase gitKnownHosts githubAppPrivateKey
{{- end -}}
{{- end }}

{{/* Every secret by name, as YAML (read it with fromYaml): secrets.* as they are, and each
secrets.webhookSecrets.<kind> as webhookSecret<Kind> (file webhook-secret-<kind>, variable
MESHGEN_WEBHOOK_SECRET_<KIND>_FILE), its key defaulting to webhook-secret-<kind>. */}}
{{- define "meshgen.allSecrets" -}}
{{- $out := dict -}}
{{- range $name, $s := .Values.secrets -}}
{{- if and (hasPrefix "webhookSecret" $name) (ne $name "webhookSecrets") -}}
{{- if or ($s | default dict).value ($s | default dict).existingSecret -}}
{{- fail (printf "secrets.%s moved: put it under secrets.webhookSecrets.%s (value, existingSecret, key), one entry per forge kind" $name (trimPrefix "webhookSecret" $name | lower)) -}}
{{- end -}}
{{- else if ne $name "webhookSecrets" -}}{{- $_ := set $out $name $s -}}{{- end -}}
{{- end -}}
{{- range $kind, $s := .Values.secrets.webhookSecrets -}}
{{- $s = $s | default dict -}}
{{- $_ := set $out (printf "webhookSecret%s" (title $kind)) (dict "value" ($s.value | default "") "existingSecret" ($s.existingSecret | default "") "key" ($s.key | default (printf "webhook-secret-%s" $kind))) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end }}

{{- define "meshgen.webhookSecretNames" -}}
{{- $names := list -}}
{{- range $kind := keys .Values.secrets.webhookSecrets | sortAlpha -}}{{- $names = append $names (printf "webhookSecret%s" (title $kind)) -}}{{- end -}}
{{- join " " $names -}}
{{- end }}

{{/* Secrets that are only mounted, without a MESHGEN_*_FILE variable: meshgen.yaml names their file
(gitToken: envRepo.git.tokenFile, see configmap.yaml). */}}
{{- define "meshgen.fileOnlySecrets" -}}gitToken{{- end }}

{{/* "true" when secret (list $ "name") is configured, else "". */}}
{{- define "meshgen.secretActive" -}}
{{- $s := index (include "meshgen.allSecrets" (index . 0) | fromYaml) (index . 1) -}}
{{- if or $s.value $s.existingSecret -}}true{{- end -}}
{{- end }}

{{- define "meshgen.secretPath" -}}/etc/meshgen/secrets/{{ include "meshgen.secretFile" . }}{{- end }}

{{/* The secrets of a component that are configured (value or existingSecret), space-separated. */}}
{{- define "meshgen.activeSecrets" -}}
{{- $all := include "meshgen.allSecrets" (index . 0) | fromYaml -}}
{{- $out := list -}}
{{- range $name := splitList " " (include "meshgen.secretNames" .) -}}
{{- if $name -}}
{{- $s := index $all $name -}}
{{- if or $s.value $s.existingSecret -}}{{- $out = append $out $name -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- join " " $out -}}
{{- end }}

{{/* forgeToken -> forge-token (file name), MESHGEN_FORGE_TOKEN_FILE (env) */}}
{{- define "meshgen.secretFile" -}}{{ kebabcase . }}{{- end }}
{{- define "meshgen.secretEnvName" -}}MESHGEN_{{ snakecase . | upper }}_FILE{{- end }}

{{- define "meshgen.secretEnv" -}}
{{- $fileOnly := splitList " " (include "meshgen.fileOnlySecrets" .) }}
{{- range $name := splitList " " (include "meshgen.activeSecrets" .) }}
{{- if and $name (not (has $name $fileOnly)) }}
- name: {{ include "meshgen.secretEnvName" $name }}
  value: /etc/meshgen/secrets/{{ include "meshgen.secretFile" $name }}
{{- end }}
{{- end }}
{{- end }}

{{/* A projected volume of the component's secrets (nothing when it has none). */}}
{{- define "meshgen.secretVolume" -}}
{{- $root := index . 0 -}}
{{- $active := include "meshgen.activeSecrets" . -}}
{{- $all := include "meshgen.allSecrets" $root | fromYaml -}}
{{- if $active }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
    {{- range $name := splitList " " $active }}
    {{- $s := index $all $name }}
    - secret:
        name: {{ $s.existingSecret | default (include "meshgen.fullname" $root) }}
        items:
          - key: {{ $s.key }}
            path: {{ include "meshgen.secretFile" $name }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "meshgen.secretMount" -}}
{{- if include "meshgen.activeSecrets" . }}
- name: secrets
  mountPath: /etc/meshgen/secrets
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod pieces shared by api, worker and beat -------------------------------------------- */}}
{{- define "meshgen.env" -}}
{{- $root := index . 0 -}}
- name: MESHGEN_ROOT
  value: /var/lib/meshgen/blueprints
- name: MESHGEN_STATE_DIR
  value: /var/lib/meshgen/state
- name: MESHGEN_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: MESHGEN_REDIS_PREFIX
  value: {{ $root.Values.redisPrefix | quote }}
- name: MESHGEN_BLUEPRINTS_BRANCH
  value: {{ $root.Values.blueprints.git.branch | quote }}
{{- with $root.Values.blueprints.git.repo }}
- name: MESHGEN_BLUEPRINTS_REPO
  value: {{ . | quote }}
{{- end }}
{{- include "meshgen.redisEnv" $root }}
{{- include "meshgen.secretEnv" . }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "meshgen.volumes" -}}
{{- $root := index . 0 -}}
- name: tmp
  emptyDir: {sizeLimit: {{ $root.Values.tmpSizeLimit }}}
- name: state
  emptyDir: {sizeLimit: {{ $root.Values.stateSizeLimit }}}
- name: blueprints
  emptyDir: {sizeLimit: {{ $root.Values.stateSizeLimit }}}
- name: config
  configMap:
    name: {{ $root.Values.blueprints.existingConfigMap | default (include "meshgen.componentName" (list $root "config")) }}
    items:
      - key: meshgen.yaml
        path: meshgen.yaml
{{- include "meshgen.secretVolume" . }}
{{- end }}

{{- define "meshgen.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: /var/lib/meshgen/state
- name: blueprints
  mountPath: /var/lib/meshgen/blueprints
- name: config
  mountPath: /var/lib/meshgen/blueprints/meshgen.yaml
  subPath: meshgen.yaml
  readOnly: true
{{- include "meshgen.secretMount" . }}
{{- end }}

{{- define "meshgen.podAnnotations" -}}
{{- $root := index . 0 -}}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
{{- with index . 1 }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "meshgen.podScheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "meshgen.automountToken" -}}
{{- or .Values.serviceAccount.automountToken .Values.rbac.argocd.enabled }}
{{- end }}
