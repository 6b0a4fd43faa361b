# Sourced by e2e/testbed: the real node and the images it runs.
#
# The node — containerd with Debian's runc, the kubelet, kube-proxy, CoreDNS and
# the CNI bridge — lives in a network namespace of the test bed's own, so pod
# traffic never leaves it. netns-bridge joins it to the host's loopback, where the
# control plane and Cassandra listen (see e2e/tools/netns-bridge/main.go).
# Nothing here gives the host an address in the namespace's range.

readonly NODE_NAME=real-node NETNS=lotus-follower-testbed
readonly NODE_IP=10.99.0.1 NODE_PREFIX=24 POD_CIDR=10.244.0.0/24
readonly CONTAINERD_VERSION=v2.2.10 COREDNS_VERSION=v1.14.7
readonly NODE_STATE=$STATE/node
readonly NODE_TAINT=lotus-follower.io/real-node
# What the kubelet, the CNI plugins and containerd use outside our state
# directory whatever they are told; `down` removes the ones `up` found missing.
readonly NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd /etc/cni /opt/cni
  /run/netns)
# The host sysctls the kubelet changes; restored by `down`.
readonly NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Where a clean host's state is recorded at the first `up`, compared by `down`.
readonly HOST_SNAPSHOT=$CACHE/host-before-up
# The images, saved for containerd to import (made by every `up`).
readonly IMAGES_DIR=$CACHE/images
# The sandbox ("pause") image is built here too: no registry is reachable.
readonly PAUSE_IMAGE=localhost/testbed/pause:3.10
# Debian's packages the node and the image builds need.
readonly NODE_PACKAGES=(runc iptables containernetworking-plugins podman mmdebstrap)

in_node() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

# ---------------------------------------------------------------------------
# Builds

build_containerd() {
  log "building containerd $CONTAINERD_VERSION (first time only)"
  (cd "$TOOLS/containerd" && CGO_ENABLED=0 GOBIN=$1/bin go install -buildvcs=false \
    -tags 'no_btrfs no_devmapper no_zfs' \
    -ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" tool)
}
build_coredns() {
  log "building CoreDNS $COREDNS_VERSION (first time only)"
  (cd "$TOOLS/coredns" && go build -buildvcs=false -o "$1/bin/coredns" .)
}
build_netns_bridge() {
  (cd "$TOOLS/netns-bridge" && go build -buildvcs=false -o "$1/bin/netns-bridge" .)
}
# Kubernetes's own pause program (build/pause/linux/pause.c of the release),
# statically linked, as the sandbox image every pod starts from.
build_pause() {
  local src
  src=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | jq -r .Dir)/build/pause/linux/pause.c
  gcc -Os -static -DVERSION="$KUBERNETES_VERSION-testbed" -o "$1/pause" "$src"
}
# The runtime base the Containerfile names, made from Debian's packages: glibc,
# libgcc, CA certificates (the bundle assembled by hand, since the extract
# variant runs no maintainer scripts), time zones.
build_base_image() {
  log "making the images' base from Debian's packages (first time only)"
  mmdebstrap --quiet --variant=extract \
    --include=libc6,libgcc-s1,ca-certificates,base-files,netbase,tzdata \
    --customize-hook='cat "$1"/usr/share/ca-certificates/mozilla/*.crt >"$1"/etc/ssl/certs/ca-certificates.crt' \
    bookworm "$1/base.tar"
}

install_node_packages() {
  local missing=() package
  for package in "${NODE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian's ${missing[*]} (first time only)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$CACHE/apt.log" 2>&1 || die "apt-get could not install ${missing[*]} (log: $CACHE/apt.log)"
}

build_node() {
  install_node_packages
  cached "$CONTAINERD_DIR" build_containerd
  cached "$COREDNS_DIR" build_coredns
  cached "$NETNS_BRIDGE_DIR" build_netns_bridge
  cached "$PAUSE_DIR" build_pause
  cached "$BASE_IMAGE_DIR" build_base_image
}

CONTAINERD_DIR=$(build_dir containerd "$CONTAINERD_VERSION" build_containerd "$TOOLS/containerd/go.mod" "$TOOLS/containerd/go.sum")
COREDNS_DIR=$(build_dir coredns "$COREDNS_VERSION" build_coredns "$TOOLS/coredns/go.mod" "$TOOLS/coredns/go.sum" "$TOOLS/coredns/main.go")
NETNS_BRIDGE_DIR=$(build_dir netns-bridge 1 build_netns_bridge "$TOOLS/netns-bridge/go.mod" "$TOOLS/netns-bridge/go.sum" "$TOOLS/netns-bridge/main.go")
PAUSE_DIR=$(build_dir pause "$KUBERNETES_VERSION" build_pause)
BASE_IMAGE_DIR=$(build_dir base-image bookworm build_base_image)
readonly CONTAINERD_DIR COREDNS_DIR NETNS_BRIDGE_DIR PAUSE_DIR BASE_IMAGE_DIR

# ---------------------------------------------------------------------------
# Images: the release binaries cargo builds, put into the Containerfile's
# runtime targets with podman (own storage under the cache), saved and imported
# into the node's containerd.

podman_testbed() {
  podman --root "$CACHE/podman/root" --runroot "$CACHE/podman/run" \
    --storage-driver overlay --runtime runc --cgroup-manager cgroupfs --events-backend none "$@"
}

build_images() {
  local target=${CARGO_TARGET_DIR:-$CACHE/cargo-target} images=$IMAGES_DIR component started=$SECONDS
  log "building the release binaries for the images"
  (cd "$REPO_DIR" && CARGO_TARGET_DIR=$target CARGO_INCREMENTAL=0 cargo build --release --locked -q \
    -p lotus-follower -p lotus-follower-operator) || die "cargo could not build the release binaries"
  mkdir -p "$images/context"
  cp "$target/release/lotus-follower" "$target/release/lotus-follower-operator" "$images/context/"
  cp "$PAUSE_DIR/pause" "$images/context/"

  local base
  base=$(sed -n 's/^ARG RUNTIME_BASE=//p' "$REPO_DIR/Containerfile")
  podman_testbed image exists "$base" ||
    podman_testbed import -q "$BASE_IMAGE_DIR/base.tar" "$base" >/dev/null
  # The names the operator defaults to: one place, the operator itself.
  declare -A image
  while IFS='=' read -r component name; do image[$component]=$name; done \
    < <("$target/release/lotus-follower-operator" images)
  local revision
  revision=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)
  for component in follower operator; do
    podman_testbed build -q --pull=never --target "$component" \
      --build-arg BINARY_DIR=. --build-arg VERSION="${image[$component]##*:}" --build-arg REVISION="$revision" \
      -f "$REPO_DIR/Containerfile" -t "${image[$component]}" "$images/context" >/dev/null ||
      die "podman could not build the $component image"
  done
  podman_testbed build -q --pull=never -f "$TOOLS/node/pause.Containerfile" -t "$PAUSE_IMAGE" \
    "$images/context" >/dev/null || die "podman could not build the pause image"
  # The same follower image under a second name: an image change to roll a fleet to.
  podman_testbed tag "${image[follower]}" "${image[follower]}-next"
  rm -f "$images"/*.tar
  # One archive holding several images needs --multi-image-archive; without it
  # podman writes the first image under every name.
  podman_testbed save -q --multi-image-archive --format docker-archive -o "$images/all.tar" \
    "${image[follower]}" "${image[follower]}-next" "${image[operator]}" "$PAUSE_IMAGE" ||
    die "podman could not save the images"
  printf '%s\n' "${image[follower]}" "${image[operator]}" "${image[follower]}-next" >"$images/names"
  # Earlier builds' layers, now nameless: keep the cache bounded.
  podman_testbed image prune -f >/dev/null
  for component in follower operator; do
    log "image ${image[$component]}: $(podman_testbed image inspect --format '{{.Size}}' "${image[$component]}" | numfmt --to=iec)"
  done
  log "images built in $((SECONDS - started))s"
}

# ---------------------------------------------------------------------------
# Host state: what `down` must leave as `up` found it.

# One line a fact, each prefixed with its kind.
host_snapshot() {
  local name
  for name in "${NODE_SYSCTLS[@]}" net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    sysctl "$name" 2>/dev/null | sed 's/^/sysctl /' || true
  done
  awk '{print "mount " $5}' /proc/self/mountinfo | sort
  ls /run/netns 2>/dev/null | sed 's/^/netns /' || true
  ip -o link show | awk -F': ' '{print "link " $2}' | sort
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sed 's/^/cgroup /' | sort
  for name in "${NODE_HOST_PATHS[@]}"; do [[ -e $name ]] && echo "path $name"; done
  iptables -S 2>/dev/null | sed 's/^/iptables /' | sort || true
}

# The first `up` records the host; an `up` after a run nobody took down first
# removes what that run left and checks the host is as recorded.
prepare_host() {
  if [[ -f $HOST_SNAPSHOT ]]; then
    log "removing what an earlier run left behind"
    remove_node_leftovers
    host_restored || die "the host differs from before the earlier run (above); fix it by hand, then rm $HOST_SNAPSHOT"
  else
    host_snapshot >"$HOST_SNAPSHOT"
  fi
}

# Compares the host with the snapshot the first `up` took; prints what differs.
host_restored() {
  [[ -f $HOST_SNAPSHOT ]] || return 0
  local now
  now=$(host_snapshot)
  if ! diff -u "$HOST_SNAPSHOT" - <<<"$now" >"$CACHE/host-diff" 2>&1; then
    log "the host differs from before 'up':"
    sed 's/^/    /' "$CACHE/host-diff" >&2
    return 1
  fi
  log "host as before 'up': $(cut -d' ' -f1 "$HOST_SNAPSHOT" | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}') compared"
}

# ---------------------------------------------------------------------------
# Start

node_certificates() {
  issue_cert kube-apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  issue_cert kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  issue_cert kubelet-serving ca "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  issue_cert kube-proxy ca "/CN=system:kube-proxy" clientAuth
  issue_cert coredns ca "/CN=system:coredns" clientAuth
  local user
  for user in kubelet kube-proxy coredns; do
    write_kubeconfig "$STATE/$user.kubeconfig" "$user" "https://$NODE_IP:$APISERVER_PORT"
  done
}

# The namespace and its one interface (a veth pair with both ends inside: the
# kernel here has no dummy driver), then the bridge to the host.
start_node_network() {
  mkdir -p "$NODE_STATE"
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link add node0 type veth peer name node0-peer
  ip -n "$NETNS" link set node0-peer up
  ip -n "$NETNS" addr add "$NODE_IP/$NODE_PREFIX" dev node0
  ip -n "$NETNS" link set node0 up
  ip -n "$NETNS" route add default dev node0
  in_node sysctl -qw net.ipv4.ip_forward=1
  : >"$NODE_STATE/resolv.conf"
  mkdir -p "$NODE_STATE/conf"
  render "$TOOLS/node/egress-selector.yaml" >"$NODE_STATE/conf/egress-selector.yaml"
  start netns-bridge "$NETNS_BRIDGE_DIR/bin/netns-bridge" --netns "/run/netns/$NETNS" \
    --connect-proxy "$NODE_STATE/egress.sock" \
    --forward "$NODE_IP:$APISERVER_PORT=127.0.0.1:$APISERVER_PORT" \
    --forward "$NODE_IP:$CQL_PORT=127.0.0.1:$CQL_PORT"
  wait_for netns-bridge 10 "serving its proxy socket" test -S "$NODE_STATE/egress.sock"
}

render() { # template: fill in the test bed's values
  sed -e "s#@STATE@#$STATE#g" -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@NODE_NAME@#$NODE_NAME#g" \
    -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@PAUSE_IMAGE@#$PAUSE_IMAGE#g" "$1"
}

# In the node's namespace; the pid file names the program (nsenter execs it).
start_in_node() { # name program args…
  local name=$1; shift
  setsid nsenter --net="/run/netns/$NETNS" -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  printf '%s %s\n' "$!" "$1" >"$PIDS/$name"
}

start_node() {
  local conf=$NODE_STATE/conf ctr
  mkdir -p "$conf" "$NODE_STATE"/{cni,containerd,kubelet,pod-logs}
  render "$TOOLS/node/containerd.toml" >"$conf/containerd.toml"
  render "$TOOLS/node/bridge.conflist" >"$NODE_STATE/cni/10-bridge.conflist"
  render "$TOOLS/node/kubelet.yaml" >"$conf/kubelet.yaml"
  render "$TOOLS/node/kube-proxy.yaml" >"$conf/kube-proxy.yaml"
  render "$TOOLS/node/Corefile" >"$conf/Corefile"

  start_in_node containerd "$CONTAINERD_DIR/bin/containerd" --config "$conf/containerd.toml"
  ctr=("$CONTAINERD_DIR/bin/ctr" --address "$NODE_STATE/containerd/containerd.sock" --namespace k8s.io)
  wait_for containerd 30 "serving its socket" "${ctr[@]}" version
  "${ctr[@]}" images import --all-platforms "$IMAGES_DIR/all.tar" >"$LOGS/images.log" 2>&1 ||
    component_failed images "ctr could not import the images"

  # The shim finds runc and the kubelet finds containerd's tools on PATH.
  PATH=$CONTAINERD_DIR/bin:$PATH start_in_node kubelet "$K8S_DIR/bin/kubelet" \
    --config "$conf/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --root-dir "$NODE_STATE/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "type=real,kubernetes.io/hostname=$NODE_NAME"
  start_in_node kube-proxy "$K8S_DIR/bin/kube-proxy" --config "$conf/kube-proxy.yaml"
  start_in_node coredns "$COREDNS_DIR/bin/coredns" -conf "$conf/Corefile"
}

wait_node() {
  wait_for kubelet 90 "registering $NODE_NAME" kubectl_admin get node "$NODE_NAME"
  wait_for kubelet 90 "making $NODE_NAME Ready" \
    kubectl_admin wait --for=condition=Ready --timeout=2s "node/$NODE_NAME"
  wait_for kube-proxy 30 "healthy" in_node curl -sf --max-time 2 http://127.0.0.1:10256/healthz
  wait_for coredns 30 "ready" in_node curl -sf --max-time 2 http://127.0.0.1:18181/ready
}

# ---------------------------------------------------------------------------
# Stop, and remove what a killed run left

# Every process in the node's pod cgroups (containers and their pause
# processes) and every shim of our containerd: they outlive the kubelet and
# containerd, and survive a SIGKILL of the test bed.
kill_node_leftovers() {
  local procs pid
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $NODE_STATE/" 2>/dev/null || true
  procs=$(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods -name cgroup.procs 2>/dev/null |
    xargs -r cat 2>/dev/null | sort -u)
  for pid in $procs; do kill -KILL "$pid" 2>/dev/null || true; done
}

remove_node_leftovers() {
  kill_node_leftovers
  # Mounts under our state (pod volumes, container root filesystems, pod network
  # namespaces) and under the host paths the kubelet and containerd use.
  local mount path deadline
  deadline=$((SECONDS + 10))
  while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done < <(awk '{print $5}' /proc/self/mountinfo |
    grep -E "^($STATE/node|/var/lib/kubelet|/run/containerd|/run/netns/cni-)" | sort -r)
  [[ -e /run/netns/$NETNS ]] && ip netns delete "$NETNS" 2>/dev/null
  # `ip netns add` makes /run/netns a mount point of its own, and leaves it.
  if [[ -f $HOST_SNAPSHOT ]] && ! grep -qxF "mount /run/netns" "$HOST_SNAPSHOT" && mountpoint -q /run/netns; then
    umount /run/netns 2>/dev/null || true
  fi
  # A cgroup goes once its processes are reaped: retry briefly.
  local top
  for top in kubepods k8s.io; do
    while compgen -G "/sys/fs/cgroup/*/$top" >/dev/null && ((SECONDS < deadline)); do
      find /sys/fs/cgroup/*/"$top" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.2
    done
  done
  # Host paths the first `up` found missing.
  if [[ -f $HOST_SNAPSHOT ]]; then
    for path in "${NODE_HOST_PATHS[@]}"; do
      grep -qxF "path $path" "$HOST_SNAPSHOT" || rm -rf "$path"
    done
  fi
  # The sysctls the kubelet changed, as the snapshot recorded them.
  if [[ -f $HOST_SNAPSHOT ]]; then
    local name
    for name in "${NODE_SYSCTLS[@]}"; do
      sed -n "s/^sysctl ${name//./\\.} = /$name=/p" "$HOST_SNAPSHOT" | xargs -r sysctl -qw
    done
  fi
}
