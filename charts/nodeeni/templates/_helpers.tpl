{{/* The labels every object carries; the selector uses the name only (a DaemonSet's selector cannot change). */}}
{{- define "nodeeni.selectorLabels" -}}
app.kubernetes.io/name: nodeeni
{{- end }}

{{- define "nodeeni.labels" -}}
{{ include "nodeeni.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The image by digest when one is pinned, else by tag (the chart's appVersion unless set). */}}
{{- define "nodeeni.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The image for an `image:` line; a long one (a registry's host and a digest) tells yamllint so. */}}
{{- define "nodeeni.imageLine" -}}
{{- $image := include "nodeeni.image" . -}}
{{ $image }}{{ if gt (len $image) 90 }}  # yamllint disable-line rule:line-length{{ end }}
{{- end }}

{{/* host:port the daemon serves /metrics, /healthz and /readyz on (an IPv6 host in brackets). */}}
{{- define "nodeeni.metricsAddr" -}}
{{- if contains ":" .Values.metrics.host -}}
[{{ .Values.metrics.host }}]:{{ .Values.metrics.port }}
{{- else -}}
{{ .Values.metrics.host }}:{{ .Values.metrics.port }}
{{- end -}}
{{- end }}

{{/* Where the kubelet's probes reach the listener: the loopback when it listens on every address. */}}
{{- define "nodeeni.probeHost" -}}
{{- if eq .Values.metrics.host "0.0.0.0" -}}
127.0.0.1
{{- else if eq .Values.metrics.host "::" -}}
::1
{{- else -}}
{{ .Values.metrics.host }}
{{- end -}}
{{- end }}

{{/* The probe host as a YAML scalar of a flow mapping (an IPv6 address quoted). */}}
{{- define "nodeeni.probeHostYaml" -}}
{{- $host := include "nodeeni.probeHost" . -}}
{{- if contains ":" $host -}}
{{ quote $host }}
{{- else -}}
{{ $host }}
{{- end -}}
{{- end }}

{{/* Prometheus scrapes from another pod: a loopback listener cannot be scraped. Called with (list $ "serviceMonitor"). */}}
{{- define "nodeeni.requireScrapeable" -}}
{{- $root := index . 0 -}}
{{- $host := $root.Values.metrics.host -}}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") -}}
{{- fail (printf "monitoring.%s.enabled needs metrics.host reachable from Prometheus (0.0.0.0 or ::), not %s" (index . 1) $host) -}}
{{- end -}}
{{- end }}

{{- define "nodeeni.priorityClassName" -}}
{{- if .Values.priorityClass.create -}}
{{ .Values.priorityClass.name }}
{{- else -}}
{{ .Values.priorityClassName }}
{{- end -}}
{{- end }}

{{/* `key: value` for each of `keys` that the map holds, in that order (a list of scalars as [a, b]), then
the map's other keys (sorted), as YAML with indented sequences. Called with (list map keys). */}}
{{- define "nodeeni.orderedYaml" -}}
{{- $m := index . 0 -}}
{{- $keys := index . 1 -}}
{{- $out := list -}}
{{- range $k := $keys -}}
{{- if hasKey $m $k -}}
{{- $v := index $m $k -}}
{{- $scalars := and (kindIs "slice" $v) (gt (len $v) 0) -}}
{{- if $scalars -}}
{{- range $v -}}
{{- if not (or (kindIs "string" .) (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) (kindIs "bool" .)) -}}
{{- $scalars = false -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $scalars -}}
{{- $items := list -}}
{{- range $v -}}
{{- $items = append $items (toJson .) -}}
{{- end -}}
{{- $out = append $out (printf "%s: [%s]" $k (join ", " $items)) -}}
{{- else -}}
{{- $out = append $out (toYamlPretty (dict $k $v)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $rest := deepCopy $m -}}
{{- range $keys -}}
{{- $_ := unset $rest . -}}
{{- end -}}
{{- if $rest -}}
{{- $out = append $out (toYamlPretty $rest) -}}
{{- end -}}
{{- join "\n" $out -}}
{{- end }}

{{/* The ConfigMap's pools.yaml: a PoolConfig from .Values.config, its keys and each pool's in the
order of README "Pool configuration" (toYaml alone would sort them). */}}
{{- define "nodeeni.poolsYaml" -}}
{{- $c := omit .Values.config "pools" -}}
apiVersion: nodeeni.io/v1alpha1
kind: PoolConfig
{{- with $c }}
{{ include "nodeeni.orderedYaml" (list . (list "clusterName" "stateDir" "reconcileIntervalSeconds" "idleIntervalMaxSeconds" "leakGraceSeconds" "node" "ec2")) }}
{{- end }}
{{- if .Values.config.pools }}
pools:
{{- range .Values.config.pools }}
  - {{ include "nodeeni.orderedYaml" (list . (list "name" "mode" "resourceName" "subnetIds" "subnetNames" "securityGroupIds" "securityGroupNames" "enisPerSubnet" "firstDeviceIndex" "networkCardIndex" "mtu" "dpdkDriver" "pciAddress" "hostIfnamePrefix" "secondaryIpCount" "ipv6AddressCount" "warmIpTarget" "maxIpsPerEni" "ipCooldownSeconds" "deleteOnTermination" "sourceDestCheck" "description" "tags" "nodeSelector")) | indent 4 | trimPrefix "    " }}
{{- end }}
{{- else }}
pools: []
{{- end }}
{{- end }}

{{/* The state folder the pools use (the daemon's default when config.stateDir is unset). */}}
{{- define "nodeeni.stateDir" -}}
{{- $dir := .Values.config.stateDir | default "/var/lib/nodeeni" -}}
{{- range list "/etc/nodeeni" "/host" "/var/lib/kubelet" "/dev" "/sys" "/proc" "/usr" "/var/run/k8s.cni.cncf.io" "/run" "/etc/kubernetes" -}}
{{- if or (eq $dir .) (hasPrefix (printf "%s/" .) $dir) (hasPrefix (printf "%s/" $dir) .) -}}
{{- fail (printf "config.stateDir %s overlaps %s, which the daemon's pod mounts or the node needs: pick a folder of its own, such as /var/lib/nodeeni" $dir .) -}}
{{- end -}}
{{- end -}}
{{ $dir }}
{{- end }}

{{/* A container's resources: requests, then limits, each a flow mapping ({cpu: 50m, memory: 48Mi}),
then anything else. Called with the resources map. */}}
{{- define "nodeeni.resources" -}}
{{- $r := . -}}
{{- $out := list -}}
{{- range $k := list "requests" "limits" -}}
{{- with index $r $k -}}
{{- $m := . -}}
{{- $items := list -}}
{{- range $name := keys $m | sortAlpha -}}
{{- $items = append $items (printf "%s: %s" $name (toYaml (index $m $name))) -}}
{{- end -}}
{{- $out = append $out (printf "%s: {%s}" $k (join ", " $items)) -}}
{{- end -}}
{{- end -}}
{{- $rest := omit $r "requests" "limits" -}}
{{- if $rest -}}
{{- $out = append $out (toYamlPretty $rest) -}}
{{- end -}}
{{- join "\n" $out -}}
{{- end }}
