#!/usr/bin/env bash
# A real one-node Kubernetes v1.20.2 on this machine, for the e2e suite (tests/e2e/cluster/)
# and for trying the operator by hand:
#
#   scripts/local-cluster.sh up       start (or finish starting) everything below; idempotent
#   scripts/local-cluster.sh down     stop what `up` started, by the pids it recorded
#   scripts/local-cluster.sh status   one line per component: running or not
#   scripts/local-cluster.sh env      `export KUBECONFIG=... DOCKER_HOST=...` lines, for eval
#   scripts/local-cluster.sh stop C   stop one component (dockerd, kubelet, ...); `up` starts it again
#   scripts/local-cluster.sh restart C   stop one component, then `up` (the fault tests' restarts)
#
# What runs, each a host process whose pid is kept in $STATE/pids/:
#   dockerd      Debian's docker.io, on its own socket and data root, with a runc wrapper as
#                the default runtime (this kernel refuses negative oom_score_adj, which the
#                kubelet asks for on every pod sandbox; the wrapper drops that one setting)
#   etcd         on loopback
#   apiserver    on the docker0 bridge address only, so pods reach it through the
#                `kubernetes` Service; ServiceAccount admission and RBAC on
#   controller-manager, scheduler, kubelet (dockershim), kube-proxy (iptables mode)
#   dns          dnsmasq on the bridge address, its hosts file rewritten from the Services on
#                every Service change: <svc>.<ns>.svc.cluster.local resolves inside pods
# The Kubernetes binaries are built from Debian's source by scripts/build-kube-apiserver.sh
# --node, and the images every pod needs (a pause image, the base and the project's image)
# by scripts/local-images.sh; both cache everything in $CACHE.
#
# Network: everything listens on loopback or on the bridge address ($NODE_IP) that dockerd
# creates; NodePorts open on that address only. Nothing listens on the machine's uplink.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

readonly CACHE="${DJ_CACHE_DIR:-$HOME/.cache/datajuicer-ft}"
readonly STATE="${DJ_CLUSTER_DIR:-$CACHE/cluster}"
readonly RUN_DIR=/run/datajuicer-ft
readonly DOCKER_SOCK="$RUN_DIR/docker.sock"
readonly DOCKER_DATA=/var/lib/datajuicer-ft/docker
readonly BRIDGE_CIDR=172.17.0.1/16
readonly NODE_IP=172.17.0.1
readonly POD_CIDR=172.17.0.0/16
readonly SERVICE_CIDR=10.0.0.0/24
readonly APISERVER_PORT=6443
readonly ETCD_PORT=23791
readonly ETCD_PEER_PORT=23792
readonly VERSION=v1.20.2
readonly PAUSE_IMAGE=dj-local/pause:1
readonly DOCKER=/usr/bin/docker  # Debian's client; another `docker` on PATH may want buildx
readonly KUBECTL="$CACHE/kubectl-$VERSION"
NODE_NAME=$(hostname | tr '[:upper:]' '[:lower:]')
readonly NODE_NAME
readonly COMPONENTS=(dockerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy dns)

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

pid_file() { echo "$STATE/pids/$1.pid"; }
log_file() { echo "$STATE/logs/$1.log"; }

# The recorded pid, if that process is still alive and still the one we started (the pid
# file also holds the process's start time, so a reused pid is never mistaken for ours).
live_pid() {
  local f pid started
  f=$(pid_file "$1")
  [[ -e $f ]] || return 1
  read -r pid started <"$f" || return 1
  [[ -n $pid && -e /proc/$pid ]] || return 1
  [[ $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$started" ]] || return 1
  echo "$pid"
}

record_pid() {
  echo "$2 $(awk '{print $22}' "/proc/$2/stat")" >"$(pid_file "$1")"
}

# Starts a component in its own session (so `down` can stop it and its children as one
# group), unless it is already running.
start() {
  local name=$1; shift
  if live_pid "$name" >/dev/null; then return; fi
  say "starting $name (log: $(log_file "$name"))"
  setsid "$@" >>"$(log_file "$name")" 2>&1 </dev/null 8>&- &  # 8: up.lock, not for daemons to hold
  record_pid "$name" $!
}

stop() {
  local name=$1 pid i grace=100
  # dockerd stops its containers first (up to 15 s each batch); killing it mid-way leaves
  # its pid file behind, and the next dockerd then refuses to start
  [[ $name == dockerd ]] && grace=400
  pid=$(live_pid "$name") || { rm -f "$(pid_file "$name")"; return 0; }
  say "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
  [[ -e /proc/$pid ]] && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$(pid_file "$name")"
}

wait_until() {
  local what=$1 timeout=$2 i; shift 2
  for ((i = 0; i < timeout * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what not ready after ${timeout}s; see $STATE/logs/"
}

kubectl() { "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

install_packages() {
  local missing=() pkg
  for pkg in docker.io dnsmasq-base iptables conntrack debootstrap openssl python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return
  say "apt: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ---- certificates, tokens and kubeconfigs (made once; kept while $STATE lives) ----------

# A client cert signed by the cluster CA.
client_cert() {
  local name=$1 subject=$2
  [[ -e $STATE/pki/$name.crt ]] && return
  openssl req -new -newkey rsa:2048 -nodes -keyout "$STATE/pki/$name.key" -subj "$subject" \
    -out "$STATE/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
    -CAcreateserial -days 3650 -out "$STATE/pki/$name.crt.tmp" 2>/dev/null
  mv "$STATE/pki/$name.crt.tmp" "$STATE/pki/$name.crt"
}

kubeconfig() {
  local name=$1 user=$2 token
  token=$(awk -F, -v u="$user" '$2 == u { print $1 }' "$STATE/pki/tokens.csv")
  cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $user
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: "$user"}
current-context: local
EOF
}

make_pki() {
  mkdir -p "$STATE/pki"
  if [[ ! -e $STATE/pki/ca.crt ]]; then
    say "making the cluster CA and keys in $STATE/pki"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -subj "/CN=datajuicer-ft-local-ca" \
      -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt.tmp" 2>/dev/null
    mv "$STATE/pki/ca.crt.tmp" "$STATE/pki/ca.crt"
  fi
  if [[ ! -e $STATE/pki/apiserver.crt ]]; then
    printf 'subjectAltName=IP:%s,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
      "$NODE_IP" >"$STATE/pki/apiserver.ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$STATE/pki/apiserver.key" -subj "/CN=kube-apiserver" \
      -out "$STATE/pki/apiserver.csr" 2>/dev/null
    openssl x509 -req -in "$STATE/pki/apiserver.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
      -CAcreateserial -days 3650 -extfile "$STATE/pki/apiserver.ext" -out "$STATE/pki/apiserver.crt.tmp" 2>/dev/null
    mv "$STATE/pki/apiserver.crt.tmp" "$STATE/pki/apiserver.crt"
  fi
  # The apiserver's identity towards the kubelet (logs, exec, port-forward).
  client_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  if [[ ! -e $STATE/pki/sa.key ]]; then
    openssl genrsa -out "$STATE/pki/sa.key.tmp" 2048 2>/dev/null
    openssl rsa -in "$STATE/pki/sa.key.tmp" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
    mv "$STATE/pki/sa.key.tmp" "$STATE/pki/sa.key"
  fi
  if [[ ! -e $STATE/pki/tokens.csv ]]; then
    local t=() i
    for i in 1 2 3 4 5; do t+=("$(openssl rand -hex 16)"); done
    {
      echo "${t[0]},admin,admin,system:masters"
      echo "${t[1]},system:kube-controller-manager,kcm,system:masters"
      echo "${t[2]},system:kube-scheduler,scheduler"
      echo "${t[3]},system:node:$NODE_NAME,kubelet,system:nodes"
      echo "${t[4]},system:kube-proxy,kube-proxy"
    } >"$STATE/pki/tokens.csv.tmp"
    chmod 600 "$STATE/pki/tokens.csv.tmp"
    mv "$STATE/pki/tokens.csv.tmp" "$STATE/pki/tokens.csv"
  fi
  kubeconfig admin admin
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
  kubeconfig kubelet "system:node:$NODE_NAME"
  kubeconfig kube-proxy system:kube-proxy
}

# ---- dockerd -------------------------------------------------------------------------------

write_runc_wrapper() {
  mkdir -p "$STATE/bin"
  cat >"$STATE/bin/dj-runc.tmp" <<'EOF'
#!/bin/sh
# runc, minus process.oomScoreAdj: this kernel refuses negative oom_score_adj writes, and
# the kubelet asks for -998 on every pod sandbox ("can't get final child's PID from pipe").
bundle=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle=$arg ;; esac
  case "$arg" in --bundle=*) bundle=${arg#--bundle=} ;; esac
  prev=$arg
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  python3 - "$bundle/config.json" <<'PY'
import json, os, sys
path = sys.argv[1]
with open(path) as f:
    config = json.load(f)
if config.get("process", {}).pop("oomScoreAdj", None) is not None:
    with open(path + ".tmp", "w") as f:
        json.dump(config, f)
    os.replace(path + ".tmp", path)
PY
fi
exec /usr/bin/runc "$@"
EOF
  chmod +x "$STATE/bin/dj-runc.tmp"
  mv "$STATE/bin/dj-runc.tmp" "$STATE/bin/dj-runc"
}

start_dockerd() {
  write_runc_wrapper
  mkdir -p "$RUN_DIR" "$DOCKER_DATA"
  # a dockerd that was killed leaves its pid file; the next one refuses to start over it
  if ! live_pid dockerd >/dev/null && [[ -e $RUN_DIR/dockerd.pid ]] \
    && ! [[ -e /proc/$(cat "$RUN_DIR/dockerd.pid" 2>/dev/null || echo none) ]]; then
    rm -f "$RUN_DIR/dockerd.pid"
  fi
  start dockerd /usr/sbin/dockerd --host "unix://$DOCKER_SOCK" --data-root "$DOCKER_DATA" \
    --exec-root "$RUN_DIR/docker-exec" --pidfile "$RUN_DIR/dockerd.pid" \
    --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs --bip "$BRIDGE_CIDR" \
    --add-runtime "dj-runc=$STATE/bin/dj-runc" --default-runtime dj-runc
  wait_until dockerd 60 "$DOCKER" -H "unix://$DOCKER_SOCK" info
}

# ---- control plane -------------------------------------------------------------------------

start_control_plane() {
  local bin="$CACHE"
  start etcd etcd --name dj-local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "dj-local=http://127.0.0.1:$ETCD_PEER_PORT"
  start kube-apiserver "$bin/kube-apiserver-$VERSION" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" --token-auth-file "$STATE/pki/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction,ServiceAccount \
    --service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate "$STATE/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$STATE/pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --allow-privileged=false
  wait_until kube-apiserver 120 kubectl get --raw /readyz
  start kube-controller-manager "$bin/kube-controller-manager-$VERSION" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --port 0 \
    --service-account-private-key-file "$STATE/pki/sa.key" --root-ca-file "$STATE/pki/ca.crt" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
    --controllers '*,-nodeipam,-cloud-node-lifecycle' --concurrent-gc-syncs 5
  start kube-scheduler "$bin/kube-scheduler-$VERSION" \
    --kubeconfig "$STATE/scheduler.kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --port 0
}

# ---- node ----------------------------------------------------------------------------------

start_node() {
  local bin="$CACHE"
  mkdir -p "$STATE/kubelet" "$STATE/kubelet-plugins"
  # Image GC off (the project's images are built here, not pulled, and would be collected
  # while no pod uses them) and eviction only on a really full disk.
  start kubelet "$bin/kubelet-$VERSION" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --address "$NODE_IP" --port 10250 --read-only-port 0 --healthz-bind-address 127.0.0.1 \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --volume-plugin-dir "$STATE/kubelet-plugins" \
    --container-runtime docker --docker-endpoint "unix://$DOCKER_SOCK" --pod-infra-container-image "$PAUSE_IMAGE" \
    --cgroup-driver cgroupfs --fail-swap-on=false \
    --anonymous-auth=false --client-ca-file "$STATE/pki/ca.crt" --authorization-mode AlwaysAllow \
    --cluster-dns "$NODE_IP" --cluster-domain cluster.local \
    --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
    --eviction-hard 'memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
    --serialize-image-pulls=false
  start kube-proxy "$bin/kube-proxy-$VERSION" \
    --kubeconfig "$STATE/kube-proxy.kubeconfig" --hostname-override "$NODE_NAME" \
    --proxy-mode iptables --masquerade-all --cluster-cidr "$POD_CIDR" \
    --nodeport-addresses "$NODE_IP/32" --conntrack-max-per-core 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  wait_until "node $NODE_NAME Ready" 120 node_ready
}

node_ready() {
  [[ $(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# ---- DNS: dnsmasq answering <svc>.<ns>.svc.cluster.local from the Services ----------------

write_dns_feeder() {
  cat >"$STATE/bin/dns-feeder.tmp" <<EOF
#!/usr/bin/env bash
# Runs dnsmasq, and rewrites its hosts file from the cluster's Services on every change.
set -uo pipefail
hosts="$RUN_DIR/dns/hosts"  # dnsmasq reads it as nobody: not under \$HOME
kubectl() { "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" "\$@"; }
refresh() {
  kubectl get services -A -o jsonpath='{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace}.svc.cluster.local{"\n"}{end}' \\
    | awk '\$1 != "None" && \$1 != ""' >"\$hosts.tmp" || return
  if ! cmp -s "\$hosts.tmp" "\$hosts"; then mv "\$hosts.tmp" "\$hosts"; kill -HUP "\$dnsmasq" 2>/dev/null; fi
}
touch "\$hosts"
/usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts "\$hosts" \\
  --listen-address "$NODE_IP" --bind-interfaces --port 53 --local /cluster.local/ --log-facility - &
dnsmasq=\$!
trap 'kill \$dnsmasq 2>/dev/null' EXIT
while kill -0 "\$dnsmasq" 2>/dev/null; do
  refresh
  # each Service event triggers a full rewrite; the watch ends now and then, so loop
  kubectl get services -A --watch-only -o name 2>/dev/null | while read -r _; do refresh; done
  sleep 1
done
EOF
  chmod +x "$STATE/bin/dns-feeder.tmp"
  mv "$STATE/bin/dns-feeder.tmp" "$STATE/bin/dns-feeder"
}

start_dns() {
  mkdir -p "$RUN_DIR/dns"
  chmod 755 "$RUN_DIR" "$RUN_DIR/dns"
  write_dns_feeder
  start dns "$STATE/bin/dns-feeder"
}

# ---- the commands --------------------------------------------------------------------------

up() {
  [[ $(id -u) == 0 ]] || die "needs root (dockerd, kubelet, iptables)"
  mkdir -p "$STATE/pids" "$STATE/logs"
  exec 8>"$STATE/up.lock"
  flock 8
  install_packages
  bash scripts/build-kube-apiserver.sh --node >/dev/null
  start_dockerd
  DOCKER_HOST="unix://$DOCKER_SOCK" bash scripts/local-images.sh pause
  make_pki
  start_control_plane
  start_node
  start_dns
  say "up: node $NODE_NAME Ready; eval \"\$(scripts/local-cluster.sh env)\""
}

down() {
  local i name
  # pods first, while the kubelet still runs, so no container outlives the cluster
  if live_pid kubelet >/dev/null && live_pid kube-apiserver >/dev/null; then
    kubectl delete pods --all -A --grace-period 5 --wait=false >/dev/null 2>&1 || true
  fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    if [[ $name == dockerd ]] && live_pid dockerd >/dev/null; then
      # the kubelet is gone: remove the pod containers it left, ours alone on this engine
      "$DOCKER" -H "unix://$DOCKER_SOCK" ps -aq --filter label=io.kubernetes.pod.name \
        | xargs -r "$DOCKER" -H "unix://$DOCKER_SOCK" rm -f >/dev/null 2>&1 || true
    fi
    stop "$name"
  done
}

status() {
  local name pid rc=0
  for name in "${COMPONENTS[@]}"; do
    if pid=$(live_pid "$name"); then echo "$name running (pid $pid)"; else echo "$name stopped"; rc=3; fi
  done
  return $rc
}

env_lines() {
  echo "export KUBECONFIG=$STATE/admin.kubeconfig"
  echo "export DOCKER_HOST=unix://$DOCKER_SOCK"
  echo "export DJ_LOCAL_KUBECTL=$KUBECTL"
  echo "export DJ_NODE_IP=$NODE_IP"
}

component() {
  local name
  for name in "${COMPONENTS[@]}"; do [[ $name == "${1:-}" ]] && return 0; done
  die "unknown component '${1:-}'; one of: ${COMPONENTS[*]}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  stop) component "${2:-}" && stop "$2" ;;
  restart) component "${2:-}" && stop "$2" && up ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|status|env|stop COMPONENT|restart COMPONENT" >&2; exit 2 ;;
esac
