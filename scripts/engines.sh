#!/usr/bin/env bash
# The engine matrix: Docker Engine 26.1 from Debian 13 (trixie) packages, run twice beside the
# machine's own engine (Debian 12's 20.10 on /var/run/docker.sock), which it never touches:
#
#   e26-graph       a graph driver (overlay2 where the kernel mounts overlayfs, else
#                   fuse-overlayfs, else vfs)
#   e26-containerd  the containerd image store ("containerd-snapshotter"; snapshotter
#                   overlayfs where overlayfs mounts, else native)
#
# Each has its own containerd (trixie's), its own dockerd (trixie's) and its own bridge; both
# run the system's runc (trixie's needs a newer glibc; it is never downloaded, so `runc` on PATH
# is Debian 12's). Nothing is installed over Debian 12's packages: the .debs are fetched with a
# side apt configuration (its own sources, lists and cache under /opt/slipway-trixie/apt) and
# unpacked with dpkg-deb -x into /opt/slipway-trixie/root.
#
#   bash scripts/engines.sh          set up and start both (idempotent; seconds when running)
#   bash scripts/engines.sh stop     stop both dockerds and their containerds
#   bash scripts/engines.sh status   say what runs
#   bash scripts/engines.sh env      print NAME=DOCKER_HOST lines (also in /run/slipway-engines/env)
#
# Paths:   sockets /run/slipway-engines/<name>/docker.sock, data /var/lib/slipway-engines/<name>,
#          logs /var/log/slipway-engine-<name>.log (dockerd) and
#          /var/log/slipway-engine-<name>.containerd.log.
# Plugins: DOCKER_CONFIG=/opt/slipway-trixie/docker-config gives the machine's docker CLI
#          buildx 0.13 and compose 2.26; its config.json is a link to ~/.docker/config.json, so
#          `docker login` is shared either way.
# Env:     SLIPWAY_ENGINES="e26-graph" limits start/stop/status/env to the engines named
#          (SLIPWAY_ENGINES= : none; start then sets up only the packages and the plugins).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/emulation.sh
. "$(dirname "$0")/lib/emulation.sh"

TRIXIE=/opt/slipway-trixie
ROOT=$TRIXIE/root
DEBS=$TRIXIE/debs
APT_DIR=$TRIXIE/apt
PLUGINS_CONFIG=$TRIXIE/docker-config
RUN_DIR=/run/slipway-engines
LIB_DIR=/var/lib/slipway-engines
BASE_IMAGE=slipway-test-base:1
PACKAGES=(docker.io containerd docker-buildx docker-compose)
ALL_ENGINES=(e26-graph e26-containerd)
read -r -a ENGINES <<<"${SLIPWAY_ENGINES-${ALL_ENGINES[*]}}"

say() { echo "engines: $*"; }
die() {
    echo "engines: error: $*" >&2
    exit 1
}

# Per engine: its bridge, pre-created, and the bridge's address. The host's docker0 belongs to
# Engine 20.10, and dockerd deletes an interface of that name (hard-coded) in two cases:
# "bridge": "none", and on any restart (a stale "bridge" network in its store) when
# "default-address-pools" is set. So neither is set here, and check_docker0 puts docker0 back
# should it vanish all the same. (Without default-address-pools, networks made with `docker
# network create` on these engines come from the same default pools as 20.10's.)
bridge_of() { case $1 in e26-graph) echo slipway-e26g ;; e26-containerd) echo slipway-e26c ;; esac; }
bridge_ip_of() { case $1 in e26-graph) echo 10.231.1.1/24 ;; e26-containerd) echo 10.231.2.1/24 ;; esac; }
sock_of() { echo "$RUN_DIR/$1/docker.sock"; }
host_of() { echo "unix://$(sock_of "$1")"; }
ctr_sock_of() { echo "$RUN_DIR/$1/containerd.sock"; }
log_of() { echo "/var/log/slipway-engine-$1.log"; }
ctr_log_of() { echo "/var/log/slipway-engine-$1.containerd.log"; }

# trixie's binaries first (containerd finds its shim, containerd-shim-runc-v2 1.7, on PATH);
# there is no runc among them, so every `runc` lookup finds the system's.
engine_path() { echo "$ROOT/usr/sbin:$ROOT/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; }

# docker0 as it was before we started anything: "" when absent, else "ADDRESS/PREFIX MTU".
docker0_state() {
    ip link show docker0 >/dev/null 2>&1 || return 0
    local addr mtu
    addr=$(ip -4 -o addr show dev docker0 | awk '{print $4; exit}')
    mtu=$(cat /sys/class/net/docker0/mtu)
    echo "${addr:-none} $mtu"
}

# Puts docker0 back (same address and MTU) if it was there before ($1) and is gone now.
# Engine 20.10 attaches its containers' veths to docker0 by name, so a recreated bridge serves.
check_docker0() {
    [ -n "$1" ] || return 0
    ip link show docker0 >/dev/null 2>&1 && return 0
    local addr=${1% *} mtu=${1#* }
    ip link add name docker0 type bridge
    ip link set docker0 mtu "$mtu"
    [ "$addr" = none ] || ip addr add "$addr" dev docker0
    ip link set docker0 up
    say "warning: docker0 had vanished (Engine 20.10 needs it); recreated it ($addr, mtu $mtu)"
}

docker0_report() {
    if ip link show docker0 >/dev/null 2>&1; then
        echo "present ($(docker0_state))"
    elif [ -n "$1" ]; then
        echo "ABSENT"
    else
        echo "absent (was absent before too)"
    fi
}

is_valid_engine() {
    local e
    for e in "${ALL_ENGINES[@]}"; do [ "$1" = "$e" ] && return 0; done
    return 1
}

# --- packages ---------------------------------------------------------------------------

apt_side() {
    # The mirror the machine's own sources use (deb822 or one-line), else Debian's CDN. Proxy
    # settings, if any, come from /etc/apt/apt.conf.d as usual; only sources, lists, cache and
    # the dpkg status (empty: nothing here is installed) are our own.
    "$1" -q \
        -o Dir::Etc::sourcelist="$APT_DIR/sources.list" \
        -o Dir::Etc::sourceparts=- \
        -o Dir::Etc::preferences=/dev/null \
        -o Dir::Etc::preferencesparts="$APT_DIR/preferences.d" \
        -o Dir::State::Lists="$APT_DIR/lists" \
        -o Dir::State::status="$APT_DIR/status" \
        -o Dir::State::extended_states="$APT_DIR/extended_states" \
        -o Dir::Cache="$APT_DIR/cache" \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
        -o APT::Sandbox::User=root \
        "${@:2}"
}

debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\/.*\/debian\/?$/) { print $i; exit } }')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

have_debs() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        compgen -G "$DEBS/${pkg}_*.deb" >/dev/null || return 1
    done
}

ensure_packages() {
    mkdir -p "$DEBS"
    if ! have_debs; then
        local mirror
        mirror=$(debian_mirror)
        mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/preferences.d"
        : >"$APT_DIR/status"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
            >"$APT_DIR/sources.list"
        say "packages: fetching ${PACKAGES[*]} from $mirror trixie (side apt state in $APT_DIR)"
        apt_side apt-get update >/dev/null
        rm -f "$DEBS"/*.deb
        (cd "$DEBS" && apt_side apt-get download "${PACKAGES[@]/%//trixie}" >/dev/null)
        have_debs || die "apt-get download did not leave all of ${PACKAGES[*]} in $DEBS"
    fi
    # The unpacked tree is stamped with the .debs it came from; new .debs mean a fresh tree.
    local stamp=$TRIXIE/unpacked-from want
    want=$(cd "$DEBS" && printf '%s\n' *.deb)
    if [ -x "$ROOT/usr/sbin/dockerd" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        say "packages: $(echo "$want" | sed 's|_amd64\.deb$||' | tr '\n' ' ')unpacked in $ROOT"
    else
        rm -rf "$ROOT" && mkdir -p "$ROOT"
        local deb
        for deb in "$DEBS"/*.deb; do
            dpkg-deb -x "$deb" "$ROOT"
        done
        echo "$want" >"$stamp"
        say "packages: unpacked $(echo "$want" | tr '\n' ' ')into $ROOT"
    fi
    if [ -e "$ROOT/usr/sbin/runc" ] || [ -e "$ROOT/usr/bin/runc" ]; then
        die "$ROOT holds a runc: it must not (trixie's runc needs glibc 2.38)"
    fi
}

# --- CLI plugins ------------------------------------------------------------------------

ensure_plugins() {
    local dir=$PLUGINS_CONFIG/cli-plugins plugin
    mkdir -p "$dir"
    for plugin in docker-buildx docker-compose; do
        ln -sfn "$ROOT/usr/libexec/docker/cli-plugins/$plugin" "$dir/$plugin"
    done
    # Logins: DOCKER_CONFIG moves config.json too. Link it to the default one so a `docker
    # login` made with or without DOCKER_CONFIG serves both (the CLI writes through the link).
    local home_config=${HOME:-/root}/.docker/config.json
    if [ ! -e "$home_config" ]; then
        mkdir -p "$(dirname "$home_config")"
        echo '{}' >"$home_config"
    fi
    if [ "$(readlink "$PLUGINS_CONFIG/config.json" 2>/dev/null)" != "$home_config" ]; then
        [ -L "$PLUGINS_CONFIG/config.json" ] || [ ! -e "$PLUGINS_CONFIG/config.json" ] ||
            mv "$PLUGINS_CONFIG/config.json" "$PLUGINS_CONFIG/config.json.old"
        ln -sfn "$home_config" "$PLUGINS_CONFIG/config.json"
    fi
    local versions
    versions=$(DOCKER_CONFIG=$PLUGINS_CONFIG docker buildx version 2>&1 | head -n1)
    versions+="; $(DOCKER_CONFIG=$PLUGINS_CONFIG docker compose version 2>&1 | head -n1)"
    say "cli plugins: DOCKER_CONFIG=$PLUGINS_CONFIG ($versions)"
}

# --- storage ----------------------------------------------------------------------------

# Whether the kernel mounts overlayfs with its upper dir on the data root's filesystem.
overlay_mounts_here() {
    local dir
    dir=$(mktemp -d "$LIB_DIR/.overlay-probe.XXXXXX")
    mkdir -p "$dir/lower" "$dir/upper" "$dir/work" "$dir/merged"
    local ok=1
    if mount -t overlay overlay \
        -o "lowerdir=$dir/lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged" 2>/dev/null; then
        touch "$dir/merged/probe" 2>/dev/null && ok=0
        umount "$dir/merged"
    fi
    rm -rf "$dir"
    return $ok
}

STORAGE_PROBED=
OVERLAY_OK=no
probe_storage() {
    [ -n "$STORAGE_PROBED" ] && return
    STORAGE_PROBED=yes
    mkdir -p "$LIB_DIR"
    if overlay_mounts_here; then OVERLAY_OK=yes; fi
}

storage_driver_of() {
    probe_storage
    case $1 in
        e26-graph)
            if [ "$OVERLAY_OK" = yes ]; then
                echo overlay2
            elif [ -e /dev/fuse ] && command -v fuse-overlayfs >/dev/null; then
                echo fuse-overlayfs
            else
                echo vfs
            fi
            ;;
        # With the containerd store, storage-driver names the containerd snapshotter.
        e26-containerd)
            if [ "$OVERLAY_OK" = yes ]; then echo overlayfs; else echo native; fi
            ;;
    esac
}

# --- config files -----------------------------------------------------------------------

containerd_config() {
    local name=$1
    cat <<EOF
version = 2
root = "$LIB_DIR/$name/containerd"
state = "$RUN_DIR/$name/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$(ctr_sock_of "$name")"

[ttrpc]
  address = "$(ctr_sock_of "$name").ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$LIB_DIR/$name/containerd-opt"
EOF
}

daemon_config() {
    local name=$1 snapshotter=false
    [ "$name" = e26-containerd ] && snapshotter=true
    cat <<EOF
{
  "data-root": "$LIB_DIR/$name/docker",
  "exec-root": "$RUN_DIR/$name/exec",
  "pidfile": "$RUN_DIR/$name/dockerd.pid",
  "hosts": ["$(host_of "$name")"],
  "containerd": "$(ctr_sock_of "$name")",
  "storage-driver": "$(storage_driver_of "$name")",
  "features": {"containerd-snapshotter": $snapshotter},
  "bridge": "$(bridge_of "$name")",
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "cgroup-parent": "/slipway-$name",
  "userland-proxy-path": "$ROOT/usr/sbin/docker-proxy",
  "init-path": "/usr/bin/docker-init",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"}
}
EOF
}

# Writes $2's output to $1; returns 0 when the file changed.
write_if_changed() {
    local file=$1 tmp
    tmp=$(mktemp)
    "${@:2}" >"$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$file"
    return 0
}

# --- processes --------------------------------------------------------------------------

# The pid in $1 if that process is running $2 (a pid file can outlive a reboot).
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
    echo "$pid"
}

containerd_answers() {
    "$ROOT/usr/bin/ctr" --address "$(ctr_sock_of "$1")" version >/dev/null 2>&1
}

dockerd_answers() {
    DOCKER_HOST=$(host_of "$1") timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null | grep -q '^26\.'
}

wait_for() {
    # wait_for SECONDS PIDFILE_OR_EMPTY PID LOG CHECK...
    local seconds=$1 pid=$2 log=$3 i
    for ((i = 0; i < seconds * 5; i++)); do
        "${@:4}" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    tail -n 30 "$log" >&2
    return 1
}

ensure_bridge() {
    local bridge ip
    bridge=$(bridge_of "$1")
    ip=$(bridge_ip_of "$1")
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add name "$bridge" type bridge
        say "$1: created bridge $bridge"
    fi
    ip -4 addr show dev "$bridge" | grep -q "inet ${ip%/*}/" || ip addr add "$ip" dev "$bridge"
    ip link set "$bridge" up
}

start_containerd() {
    local name=$1 config=$RUN_DIR/$1/containerd.toml log pid changed=no
    log=$(ctr_log_of "$name")
    write_if_changed "$config" containerd_config "$name" && changed=yes
    pid=$(live_pid "$RUN_DIR/$name/containerd.pid" "containerd --config $config") || pid=
    if [ -n "$pid" ] && [ "$changed" = yes ]; then
        say "$name: containerd config changed; restarting containerd (pid $pid)"
        stop_pid "$pid" "containerd ($name)" 30
        pid=
    fi
    if [ -n "$pid" ] && containerd_answers "$name"; then
        say "$name: containerd running (pid $pid)"
        return
    fi
    [ -z "$pid" ] || stop_pid "$pid" "unanswering containerd ($name)" 10
    mkdir -p "$LIB_DIR/$name/containerd" "$RUN_DIR/$name/containerd"
    local started=$SECONDS
    PATH=$(engine_path) setsid nohup "$ROOT/usr/bin/containerd" --config "$config" \
        </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$RUN_DIR/$name/containerd.pid"
    wait_for 30 "$pid" "$log" containerd_answers "$name" ||
        die "$name: containerd did not answer on $(ctr_sock_of "$name") (log $log)"
    say "$name: started containerd $("$ROOT/usr/bin/containerd" --version | awk '{print $3}') (pid $pid, $((SECONDS - started))s, socket $(ctr_sock_of "$name"), log $log)"
}

start_dockerd() {
    local name=$1 config=$RUN_DIR/$1/daemon.json log pid changed=no
    log=$(log_of "$name")
    write_if_changed "$config" daemon_config "$name" && changed=yes
    pid=$(live_pid "$RUN_DIR/$name/dockerd.pid" "dockerd --config-file $config") || pid=
    if [ -n "$pid" ] && [ "$changed" = yes ]; then
        say "$name: daemon.json changed; restarting dockerd (pid $pid)"
        stop_pid "$pid" "dockerd ($name)" 60
        pid=
    fi
    if [ -n "$pid" ] && dockerd_answers "$name"; then
        say "$name: dockerd running (pid $pid)"
        return
    fi
    [ -z "$pid" ] || stop_pid "$pid" "unanswering dockerd ($name)" 30
    rm -f "$RUN_DIR/$name/dockerd.pid"
    mkdir -p "$LIB_DIR/$name/docker" "$RUN_DIR/$name/exec"
    local started=$SECONDS
    PATH=$(engine_path) setsid nohup "$ROOT/usr/sbin/dockerd" --config-file "$config" \
        </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    wait_for 60 "$pid" "$log" dockerd_answers "$name" ||
        die "$name: dockerd did not answer on $(host_of "$name") (log $log)"
    say "$name: started dockerd $(DOCKER_HOST=$(host_of "$name") docker version --format '{{.Server.Version}}') (pid $pid, $((SECONDS - started))s, $(host_of "$name"), log $log)"
}

stop_pid() {
    # stop_pid PID WHAT SECONDS: SIGTERM, then SIGKILL after SECONDS.
    local pid=$1 what=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < $3 * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || {
            say "stopped $what (pid $pid)"
            return 0
        }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $what (pid $pid): no exit within $3s of SIGTERM"
}

# --- the base image ---------------------------------------------------------------------

BASE_TAR=
base_tar() {
    [ -n "$BASE_TAR" ] && return
    [ -x /bin/busybox ] || die "no /bin/busybox (busybox-static); run scripts/test-env.sh first"
    BASE_TAR=$(mktemp --suffix=.tar)
    busybox_root_tar /bin/busybox "$BASE_TAR"
}

# Docker Hub is out of reach: the tests' base image is busybox-static imported from a tar,
# as scripts/test-env.sh does for the machine's engine.
ensure_base_image() {
    local name=$1 host
    host=$(host_of "$name")
    if DOCKER_HOST=$host docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "$name: base image $BASE_IMAGE present"
    else
        base_tar
        DOCKER_HOST=$host docker import "${BUSYBOX_IMPORT_CHANGES[@]}" \
            "$BASE_TAR" "$BASE_IMAGE" >/dev/null
        say "$name: base image $BASE_IMAGE imported from busybox-static"
    fi
    DOCKER_HOST=$host ensure_platform_bases
}

# --- commands ---------------------------------------------------------------------------

write_env() {
    local e tmp
    tmp=$(mktemp "$RUN_DIR/.env.XXXXXX")
    for e in "${ALL_ENGINES[@]}"; do
        echo "$e=$(host_of "$e")"
    done >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$RUN_DIR/env"
}

cmd_start() {
    local started=$SECONDS docker0 e
    docker0=$(docker0_state)
    ensure_packages
    ensure_plugins
    for e in "${ENGINES[@]}"; do
        mkdir -p "$RUN_DIR/$e" "$LIB_DIR/$e"
        ensure_bridge "$e"
        start_containerd "$e"
        start_dockerd "$e"
        check_docker0 "$docker0"
        ensure_base_image "$e"
        local info
        info=$(DOCKER_HOST=$(host_of "$e") docker info --format \
            '{{.ServerVersion}} storage {{.Driver}} {{range .DriverStatus}}{{index . 0}}={{index . 1}} {{end}}runc {{.RuncCommit.ID}}')
        say "$e: $(host_of "$e"): Engine $info"
    done
    [ -z "$BASE_TAR" ] || rm -f "$BASE_TAR"
    write_env
    say "docker0: $(docker0_report "$docker0")"
    say "ready in $((SECONDS - started))s; DOCKER_HOST of each in $RUN_DIR/env:"
    sed 's/^/  /' "$RUN_DIR/env"
}

cmd_stop() {
    local docker0 e pid
    docker0=$(docker0_state)
    for e in "${ENGINES[@]}"; do
        if pid=$(live_pid "$RUN_DIR/$e/dockerd.pid" "dockerd --config-file $RUN_DIR/$e/daemon.json"); then
            # dockerd stops its containers (up to their stop timeouts) before it exits.
            stop_pid "$pid" "$e dockerd" 60
        else
            say "$e: dockerd not running"
        fi
        if pid=$(live_pid "$RUN_DIR/$e/containerd.pid" "containerd --config $RUN_DIR/$e/containerd.toml"); then
            stop_pid "$pid" "$e containerd" 30
        else
            say "$e: containerd not running"
        fi
        rm -f "$RUN_DIR/$e/containerd.pid"
        # Shims whose containers outlived dockerd (there should be none) would keep mounts.
        local left
        left=$(grep -c " $LIB_DIR/$e/" /proc/self/mounts || true)
        [ "$left" = 0 ] || say "$e: warning: $left mounts left under $LIB_DIR/$e"
        if ip link show "$(bridge_of "$e")" >/dev/null 2>&1; then
            ip link delete "$(bridge_of "$e")" && say "$e: deleted bridge $(bridge_of "$e")"
        fi
    done
    check_docker0 "$docker0"
    say "docker0: $(docker0_report "$docker0")"
}

cmd_status() {
    local e
    for e in "${ENGINES[@]}"; do
        if dockerd_answers "$e"; then
            say "$e: $(host_of "$e"): $(DOCKER_HOST=$(host_of "$e") docker info --format \
                'Engine {{.ServerVersion}}, storage {{.Driver}} {{range .DriverStatus}}{{index . 0}}={{index . 1}} {{end}}')"
        else
            say "$e: not answering on $(host_of "$e")"
        fi
    done
    say "docker0: $(docker0_report "")"
}

main() {
    local e
    for e in "${ENGINES[@]}"; do
        is_valid_engine "$e" || die "unknown engine $e in SLIPWAY_ENGINES (known: ${ALL_ENGINES[*]})"
    done
    case ${1:-start} in
        env)
            for e in "${ENGINES[@]}"; do echo "$e=$(host_of "$e")"; done
            return
            ;;
        status)
            cmd_status
            return
            ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (starts daemons, makes bridges and mounts)"
    mkdir -p "$RUN_DIR"
    # One run at a time: two test runs may call this together.
    exec 9>"$RUN_DIR/.lock"
    flock 9
    case ${1:-start} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        *) die "usage: $0 [start|stop|status|env]" ;;
    esac
}

main "$@"
