#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for spillway's tests and for trying spillway on a
# laptop: etcd, kube-apiserver, kube-scheduler and kube-controller-manager built from upstream
# (testbed/build.sh), and kwok animating fake nodes and pods.
#
#   scripts/testbed.sh up   [--dir DIR] [--bare]   start in the background, print how to use it
#   scripts/testbed.sh down [--dir DIR]            stop it and remove DIR
#   scripts/testbed.sh env  [--dir DIR]            print `export KUBECONFIG=...`
#   scripts/testbed.sh run  [--dir DIR] [--bare] [--exit-with-parent]   the same, in the foreground
#
# The apiserver serves TLS from a CA made here, authenticates clients by certificate or
# ServiceAccount token, and authorises with RBAC. Unless --bare, `up` also registers the guide's
# nodes (4 ECS nodes labelled mykey4pod=asmgateway and tainted mykey=myvalue:NoSchedule, one
# virtual node labelled type=virtual-kubelet with ACK's taint), applies deploy/ and creates the
# gateway Deployment istio-system/istio-ingressgateway with the guide's 80/20 affinity.
#
# Pod start latency (kwok): SPILLWAY_TESTBED_ECS_START_MS (default 1000) on ECS nodes,
# SPILLWAY_TESTBED_ECI_START_MS (default 3000) on virtual nodes; deletion after the grace period.
# Pod IPs come from SPILLWAY_TESTBED_POD_CIDR (default 127.64.0.0/16): loopback addresses, so
# that a test can answer at a pod's own IP (the Envoy stand-ins serve each pod's
# /stats/prometheus there, for the agent's fast path).
# SPILLWAY_TESTBED_APISERVER_ONLY=1 starts etcd and kube-apiserver alone (for bulk benchmarks).
# SPILLWAY_TESTBED_HPA_SYNC_PERIOD (default upstream's 15s): how often the HPA controller syncs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"; shift || true
dir="${SPILLWAY_TESTBED_DIR:-$root/target/testbed/run}"
bare=false
exit_with_parent=false
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --bare) bare=true; shift ;;
    --exit-with-parent) exit_with_parent=true; shift ;;
    *) echo "testbed: unknown argument $1" >&2; exit 2 ;;
  esac
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

make_certs() {
  local c="$dir/pki"
  mkdir -p "$c"
  ossl() { openssl "$@" 2>/dev/null; }
  key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
  ca() { # name CN
    key "$c/$1.key"
    ossl req -x509 -new -key "$c/$1.key" -subj "/CN=$2" -days 2 -out "$c/$1.crt" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  }
  cert() { # name ca subject extensions
    key "$c/$1.key"
    ossl req -new -key "$c/$1.key" -subj "$3" -out "$c/$1.csr"
    printf '%b' "$4" > "$c/$1.ext"
    ossl x509 -req -in "$c/$1.csr" -CA "$c/$2.crt" -CAkey "$c/$2.key" -CAcreateserial -days 2 \
      -extfile "$c/$1.ext" -out "$c/$1.crt"
  }
  ca ca testbed-ca
  ca front-proxy-ca testbed-front-proxy-ca
  cert apiserver ca "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n"
  cert admin ca "/O=system:masters/CN=testbed-admin" "extendedKeyUsage=clientAuth\n"
  cert scheduler ca "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth\n"
  cert controller-manager ca "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth\n"
  cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" "extendedKeyUsage=clientAuth\n"
  key "$c/sa.key"
  ossl pkey -in "$c/sa.key" -pubout -out "$c/sa.pub"
}

kubeconfig() { # file user
  local c="$dir/pki"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://127.0.0.1:$(cat "$dir/apiserver.port")
    certificate-authority-data: $(base64 -w0 < "$c/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 < "$c/$2.crt")
    client-key-data: $(base64 -w0 < "$c/$2.key")
contexts:
- name: testbed
  context: {cluster: testbed, user: $2}
current-context: testbed
EOF
}

kwok_stages() {
  # kwok's Stage API (kwok.x-k8s.io/v1alpha1): when to move an object and to which status.
  local ecs_ms="${SPILLWAY_TESTBED_ECS_START_MS:-1000}" eci_ms="${SPILLWAY_TESTBED_ECI_START_MS:-3000}"
  local ready_status='
      {{ $now := Now }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - {name: {{ .name | Quote }}, image: {{ .image | Quote }}, ready: true, started: true, restartCount: 0, state: {running: {startedAt: {{ $now | Quote }}}}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}'
  cat <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: node-initialize}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: NotIn, values: ['True']}
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      {{ range NodeConditions }}
      - {type: {{ .type | Quote }}, status: {{ .status | Quote }}, reason: {{ .reason | Quote }}, message: {{ .message | Quote }}, lastHeartbeatTime: {{ \$now | Quote }}, lastTransitionTime: {{ \$now | Quote }}}
      {{ end }}
      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      - {type: Hostname, address: {{ NodeName | Quote }}}
      allocatable: {{ with .status.allocatable }}{{ YAML . 1 }}{{ else }}{cpu: 1k, memory: 1Ti, pods: 1M}{{ end }}
      capacity: {{ with .status.capacity }}{{ YAML . 1 }}{{ else }}{{ with .status.allocatable }}{{ YAML . 1 }}{{ else }}{cpu: 1k, memory: 1Ti, pods: 1M}{{ end }}{{ end }}
      nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: {{ printf "kwok-%s" Version | Quote }}}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: node-heartbeat-with-lease}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - {key: '.status.phase', operator: In, values: [Running]}
    - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: In, values: ['True']}
  delay: {durationMilliseconds: 600000, jitterDurationMilliseconds: 610000}
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      {{ range NodeConditions }}
      - {type: {{ .type | Quote }}, status: {{ .status | Quote }}, reason: {{ .reason | Quote }}, message: {{ .message | Quote }}, lastHeartbeatTime: {{ \$now | Quote }}, lastTransitionTime: {{ \$now | Quote }}}
      {{ end }}
  immediateNextStage: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-ready-ecs}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.podIP', operator: DoesNotExist}
    - {key: '.spec.nodeName', operator: Exists}
    - {key: '.spec.nodeName', operator: NotIn, values: [$(virtual_node_names)]}
  delay: {durationMilliseconds: $ecs_ms}
  next:
    statusTemplate: |$ready_status
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-ready-eci}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.podIP', operator: DoesNotExist}
    - {key: '.spec.nodeName', operator: In, values: [$(virtual_node_names)]}
  delay: {durationMilliseconds: $eci_ms}
  next:
    statusTemplate: |$ready_status
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
    - {key: '.metadata.finalizers', operator: DoesNotExist}
  delay:
    durationMilliseconds: 0
    jitterDurationFrom: {expressionFrom: '.metadata.deletionTimestamp'}
  next: {delete: true}
EOF
}

# The virtual nodes kwok must treat as ECI (slower start): the names the seeding below uses, plus
# any in SPILLWAY_TESTBED_VIRTUAL_NODES (comma-separated) for tests that register their own.
virtual_node_names() {
  local names="${SPILLWAY_TESTBED_VIRTUAL_NODES:-virtual-kubelet-cn-hangzhou-k}"
  echo "'${names//,/\',\'}'"
}

start_all() {
  local bin; bin="$(bash "$root/testbed/build.sh" | tail -1)"
  mkdir -p "$dir/logs" "$dir/etcd"
  make_certs
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  echo "$api_port" > "$dir/apiserver.port"

  "$bin/etcd" --name testbed --data-dir "$dir/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "testbed=http://127.0.0.1:$peer_port" --log-level warn \
    > "$dir/logs/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"

  cat > "$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
  users: [system:kube-scheduler, system:kube-controller-manager]
- level: RequestResponse
  resources: [{group: apps, resources: [deployments/scale]}]
- level: Request
  verbs: [patch]
  resources: [{group: "", resources: [pods]}]
- level: Metadata
EOF
  local c="$dir/pki"
  # Aggregated APIs (tests/hpa.rs registers prometheus-adapter) are reached by Service routing:
  # an ExternalName Service `localhost` resolves to the server on loopback. Endpoint routing
  # (--enable-aggregator-routing) cannot: EndpointSlices refuse loopback addresses, and there is
  # no kube-proxy for a cluster IP.
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$c/apiserver.crt" --tls-private-key-file "$c/apiserver.key" \
    --client-ca-file "$c/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$c/sa.pub" \
    --service-account-signing-key-file "$c/sa.key" --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged \
    --requestheader-client-ca-file "$c/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$c/front-proxy-client.crt" --proxy-client-key-file "$c/front-proxy-client.key" \
    --endpoint-reconciler-type none \
    --audit-log-path "$dir/audit.log" --audit-policy-file "$dir/audit-policy.yaml" \
    --audit-log-format json --audit-log-mode blocking \
    > "$dir/logs/kube-apiserver.log" 2>&1 &
  echo $! > "$dir/kube-apiserver.pid"

  kubeconfig "$dir/kubeconfig" admin
  kubeconfig "$dir/scheduler.kubeconfig" scheduler
  kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
  local deadline=$(( $(date +%s) + 120 ))
  until curl -sf --cacert "$c/ca.crt" --cert "$c/admin.crt" --key "$c/admin.key" \
      "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; do
    if [ "$(date +%s)" -gt "$deadline" ] || ! kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
      echo "testbed: kube-apiserver did not become ready; last log lines:" >&2
      tail -20 "$dir/logs/kube-apiserver.log" >&2
      return 1
    fi
    sleep 0.2
  done

  KUBECTL="$bin/kubectl"
  # Benchmarks that bulk-create objects need only the apiserver: no controllers, no kubelets.
  if [ "${SPILLWAY_TESTBED_APISERVER_ONLY:-0}" = 1 ]; then return 0; fi
  "$bin/kube-scheduler" --kubeconfig "$dir/scheduler.kubeconfig" --leader-elect=false \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 > "$dir/logs/kube-scheduler.log" 2>&1 &
  echo $! > "$dir/kube-scheduler.pid"
  "$bin/kube-controller-manager" --kubeconfig "$dir/controller-manager.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --use-service-account-credentials=true \
    --root-ca-file "$c/ca.crt" --service-account-private-key-file "$c/sa.key" \
    --controllers '*' --horizontal-pod-autoscaler-sync-period "${SPILLWAY_TESTBED_HPA_SYNC_PERIOD:-15s}" \
    --concurrent-deployment-syncs 5 --concurrent-replicaset-syncs 5 \
    > "$dir/logs/kube-controller-manager.log" 2>&1 &
  echo $! > "$dir/kube-controller-manager.pid"

  kwok_stages > "$dir/kwok-stages.yaml"
  "$bin/kwok" --kubeconfig "$dir/kubeconfig" --manage-all-nodes=true \
    --cidr "${SPILLWAY_TESTBED_POD_CIDR:-127.64.0.0/16}" \
    --config "$dir/kwok-stages.yaml" --node-lease-duration-seconds 40 \
    > "$dir/logs/kwok.log" 2>&1 &
  echo $! > "$dir/kwok.pid"
  KUBECTL="$bin/kubectl"
}

seed() {
  local k=("$KUBECTL" --kubeconfig "$dir/kubeconfig")
  "${k[@]}" wait --for=create --timeout=60s serviceaccount/default -n default >/dev/null
  "${k[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
EOF
  for i in 1 2 3 4; do
    "${k[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: cn-hangzhou.ecs-gw-$i
  labels: {mykey4pod: asmgateway, kubernetes.io/hostname: cn-hangzhou.ecs-gw-$i, node.kubernetes.io/instance-type: ecs.c7.2xlarge}
  annotations: {kwok.x-k8s.io/node: fake}
spec:
  taints: [{key: mykey, value: myvalue, effect: NoSchedule}]
status:
  allocatable: {cpu: "8", memory: 16Gi, pods: "64"}
  capacity: {cpu: "8", memory: 16Gi, pods: "64"}
EOF
  done
  "${k[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: virtual-kubelet-cn-hangzhou-k
  labels: {type: virtual-kubelet, kubernetes.io/hostname: virtual-kubelet-cn-hangzhou-k}
  annotations: {kwok.x-k8s.io/node: fake}
spec:
  taints: [{key: virtual-kubelet.io/provider, value: alibabacloud, effect: NoSchedule}]
status:
  allocatable: {cpu: "10000", memory: 100Ti, pods: "10000"}
  capacity: {cpu: "10000", memory: 100Ti, pods: "10000"}
EOF
  "${k[@]}" apply -k "$root/deploy" >/dev/null 2>"$dir/logs/apply-deploy.log" \
    || "${k[@]}" apply -f "$root/deploy/namespace.yaml" -f "$root/deploy/crd.yaml" -f "$root/deploy/plannedevent-crd.yaml" -f "$root/deploy/rbac.yaml" >/dev/null
  "${k[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {app: istio-ingressgateway}}
spec:
  replicas: 4
  selector: {matchLabels: {app: istio-ingressgateway}}
  template:
    metadata: {labels: {app: istio-ingressgateway}}
    spec:
      containers:
      - name: istio-proxy
        image: istio/proxyv2:1.27.0
        resources: {requests: {cpu: "2", memory: 2Gi}}
      tolerations:
      - {key: virtual-kubelet.io/provider, operator: Equal, value: alibabacloud, effect: NoSchedule}
      - {key: mykey, operator: Equal, value: myvalue, effect: NoSchedule}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: mykey4pod, operator: In, values: [asmgateway]}]
            - matchExpressions: [{key: type, operator: In, values: [virtual-kubelet]}]
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 80
            preference: {matchExpressions: [{key: mykey4pod, operator: In, values: [asmgateway]}]}
          - weight: 20
            preference: {matchExpressions: [{key: type, operator: In, values: [virtual-kubelet]}]}
EOF
}

stop_all() {
  for p in kwok kube-controller-manager kube-scheduler kube-apiserver etcd; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  for p in kwok kube-controller-manager kube-scheduler kube-apiserver etcd; do
    if [ -f "$dir/$p.pid" ]; then
      local pid; pid="$(cat "$dir/$p.pid")"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

case "$cmd" in
  run)
    rm -rf "$dir"; mkdir -p "$dir"
    parent=$PPID
    trap 'stop_all' EXIT
    trap 'exit 0' TERM INT
    start_all
    $bare || seed
    echo "$$" > "$dir/testbed.pid"
    touch "$dir/ready"
    if $exit_with_parent; then
      while kill -0 "$parent" 2>/dev/null; do sleep 1; done
    else
      wait
    fi
    ;;
  up)
    if [ -f "$dir/testbed.pid" ] && kill -0 "$(cat "$dir/testbed.pid")" 2>/dev/null; then
      echo "testbed: already running in $dir" >&2
    else
      rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
      args=(run --dir "$dir"); $bare && args+=(--bare)
      setsid nohup bash "$0" "${args[@]}" > "$dir.log" 2>&1 < /dev/null &
      deadline=$(( $(date +%s) + 900 ))
      until [ -f "$dir/ready" ]; do
        if [ "$(date +%s)" -gt "$deadline" ] || ! kill -0 $! 2>/dev/null; then
          echo "testbed: did not start; see $dir.log and $dir/logs/" >&2; tail -20 "$dir.log" >&2; exit 1
        fi
        sleep 0.5
      done
    fi
    echo "testbed: up. Binaries: $(dirname "$(bash "$root/testbed/build.sh" | tail -1)")/bin; logs in $dir/logs"
    echo "export KUBECONFIG=$dir/kubeconfig"
    ;;
  env)
    echo "export KUBECONFIG=$dir/kubeconfig"
    echo "export PATH=$(bash "$root/testbed/build.sh" | tail -1):\$PATH"
    ;;
  down)
    if [ -f "$dir/testbed.pid" ]; then kill "$(cat "$dir/testbed.pid")" 2>/dev/null || true; fi
    for _ in $(seq 100); do [ -f "$dir/etcd.pid" ] || break; sleep 0.1; done
    stop_all
    rm -rf "$dir"
    echo "testbed: down"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
