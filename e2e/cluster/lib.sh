# Shared settings for the local cluster's scripts. Sourced, not run.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
SERIN_CACHE=${SERIN_CACHE:-$HOME/.cache/serin}
# Binaries are built once per version set, outside the repository, and reused by every run.
SERIN_BIN=${SERIN_BIN:-$SERIN_CACHE/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}
CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

REPO_DIR=$(cd "$CLUSTER_DIR/../.." && pwd)
# Everything a running cluster has (certs, data, logs, pids) lives here; `down` removes it.
STATE=${SERIN_CLUSTER_STATE:-${TMPDIR:-/tmp}/serin-cluster}
# Stop order: consumers first, etcd last.
COMPONENTS=(prometheus trafficsim kwok kube-scheduler kube-controller-manager kube-apiserver etcd)
# Started only by the tests that need them (e2e/cluster/flux), stopped before the rest.
ADDONS=(kustomize-controller source-controller gitserver)

# Field 22 of /proc/PID/stat is the start time; a zombie (state Z, field 3) has exited and only awaits reaping.
proc_start_time() { awk '$3 != "Z" {print $22}' "/proc/$1/stat" 2>/dev/null; }

# A pid file holds "pid starttime": a pid the kernel has since given to another process is never signalled.
alive() { # component -> 0 when the process `up` started is still running
  local f=$STATE/pids/$1 pid start
  [ -f "$f" ] || return 1
  read -r pid start < "$f"
  [ -n "$pid" ] && [ "$(proc_start_time "$pid")" = "$start" ]
}

start_proc() { # component command... : runs it detached, output to logs/<component>.log
  local name=$1; shift
  mkdir -p "$STATE/pids" "$STATE/logs"
  setsid "$@" </dev/null >"$STATE/logs/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(proc_start_time "$pid")" > "$STATE/pids/$name"
}

stop_proc() { # component
  local name=$1 f=$STATE/pids/$1 pid start i
  [ -f "$f" ] || return 0
  read -r pid start < "$f"
  if alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$name" || break; sleep 0.1; done
    if alive "$name"; then log "$name (pid $pid) ignored SIGTERM for 10s: killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
    for i in $(seq 1 50); do alive "$name" || break; sleep 0.1; done
  fi
  rm -f "$f"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_ports() { # VAR... : sets each to a port nothing listens on, all distinct
  # Below the kernel's ephemeral range, where a client connection's local port could take it from us.
  local low high var p
  read -r low high < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  for var in "$@"; do
    while :; do
      p=$(( 20000 + RANDOM % (low > 21000 ? low - 20000 : 1000) ))
      case " ${TAKEN_PORTS:-} " in *" $p "*) continue ;; esac
      port_in_use "$p" || break
    done
    TAKEN_PORTS="${TAKEN_PORTS:-} $p"
    printf -v "$var" '%s' "$p"
  done
}

wait_for() { # component seconds command... : retries the command until it succeeds
  local name=$1 secs=$2 deadline; shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then fail_component "$name" "exited"; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then fail_component "$name" "not ready after ${secs}s"; fi
    sleep 0.2
  done
}

fail_component() { # component why
  log "error: $1 $2; its log: $STATE/logs/$1.log"
  tail -n 20 "$STATE/logs/$1.log" >&2 2>/dev/null || true
  exit 1
}

# On any failure, stop whatever had started, keeping the logs to read.
stop_all_on_failure() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  for c in "${ADDONS[@]}" "${COMPONENTS[@]}"; do stop_proc "$c"; done
  log "failed (exit $rc): stopped what had started; logs kept in $STATE/logs (e2e/cluster/down removes them)"
  exit "$rc"
}

# kube-apiserver on loopback, against etcd; `up` starts it, and `apiserver restart` again (fault tests).
# The benchmarks' controllers (Serin, and Flagger beside it) run as ServiceAccounts of the namespace
# serin-bench, and the API server logs each of their writes (verb and object, no bodies) to
# logs/audit.log: the same count for both, whatever each says of itself. Every other request is not logged.
BENCH_NAMESPACE=serin-bench
write_audit_policy() { # file
  cat > "$1" <<POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:$BENCH_NAMESPACE"]
  verbs: [create, update, patch, delete, deletecollection]
- level: None
POLICY
}

start_apiserver() { # bin-dir pki-dir etcd-port apiserver-port
  local b=$1 p=$2 etcd_port=$3 port=$4
  write_audit_policy "$STATE/audit-policy.yaml"
  start_proc kube-apiserver "$b/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode RBAC --allow-privileged --disable-admission-plugins ServiceAccount \
    --cert-dir "$STATE/pki" --audit-policy-file "$STATE/audit-policy.yaml" \
    --audit-log-path "$STATE/logs/audit.log" --audit-log-format json --audit-log-maxsize 2000
  apicurl() { curl -sf --max-time 2 --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "https://127.0.0.1:$port$1"; }
  wait_for kube-apiserver 90 apicurl /readyz
}

restart_proc() { # component port : stops it and starts it again with the same command line, once its
  # port is free (a process that just exited may hold it a moment longer)
  local f=$STATE/pids/$1 port=$2 pid start i args=()
  alive "$1" || return 0
  read -r pid start < "$f"
  mapfile -d '' args < "/proc/$pid/cmdline"
  stop_proc "$1"
  for i in $(seq 1 100); do port_in_use "$port" || break; sleep 0.1; done
  start_proc "$1" "${args[@]}"
}
