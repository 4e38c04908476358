{{/* Standard labels, plus the owning team. Called with (dict "root" $ "svc" $svc). */}}
{{- define "baseline.labels" -}}
app.kubernetes.io/name: {{ .svc.name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ .svc.team }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{/*
Host of a service. The short name, as meshgen writes it: Istio resolves it in the
namespace of the rule, which is the service's own.
*/}}
{{- define "baseline.host" -}}
{{ .name }}
{{- end -}}

{{/* Workload selector: the pods of the service (blueprint default: app=<service>). */}}
{{- define "baseline.selector" -}}
selector:
  matchLabels:
    app: {{ .name }}
{{- end -}}

{{/*
SPIFFE principal of an access rule's `from` entry, as the blueprint spec defines it:
`sa` (same namespace), `ns/sa`, or a full `cluster.local/ns/x/sa/y`.
Called with (dict "from" $from "namespace" $svc.namespace).
*/}}
{{- define "baseline.principal" -}}
{{- if hasPrefix "cluster.local/" .from -}}
{{ .from }}
{{- else if contains "/" .from -}}
{{- $parts := splitList "/" .from -}}
cluster.local/ns/{{ index $parts 0 }}/sa/{{ index $parts 1 }}
{{- else -}}
cluster.local/ns/{{ .namespace }}/sa/{{ .from }}
{{- end -}}
{{- end -}}
