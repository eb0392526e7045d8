#!/usr/bin/env bash
# Prepares this machine for slipway's integration tests: the tools the registry harness
# (tests/support/registry.rs) shells out to, PostgreSQL's server for tests/support/postgres.rs
# (which starts one itself), a running Docker Engine and the offline base image
# slipway-test-base:1; for the multi-platform tests, QEMU's arm64 binfmt handler and the bases
# slipway-test-base-amd64:1 and slipway-test-base-arm64:1 (lib/emulation.sh).
# Idempotent; does nothing slow when everything is there already.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/emulation.sh
. "$(dirname "$0")/lib/emulation.sh"

BASE_IMAGE=slipway-test-base:1
DOCKERD_LOG=/var/log/slipway-dockerd.log

say() { echo "test-env: $*"; }
die() { echo "test-env: error: $*" >&2; exit 1; }

install_packages() {
    local wanted=(docker-registry busybox-static apache2-utils openssl ca-certificates curl chromium chromium-driver skopeo postgresql)
    # Any docker CLI will do (one may come from outside Debian); docker.io only when there is none.
    command -v docker >/dev/null || wanted+=(docker.io)
    # The compose file is validated by whichever compose is present; Debian's when none is.
    command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || wanted+=(docker-compose)
    apt_install_missing "${wanted[@]}"
}

# dockerd refuses a flag that daemon.json also sets, so pass only those it does not.
dockerd_flags() {
    local config=/etc/docker/daemon.json key value
    for key in iptables=false bridge=none storage-driver=vfs; do
        value=${key#*=}
        key=${key%%=*}
        if [ -f "$config" ] && grep -q "\"$key\"" "$config"; then continue; fi
        echo "--$key=$value"
    done
}

ensure_engine() {
    if docker info >/dev/null 2>&1; then
        say "docker engine: answering"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "docker engine not answering and not root to start dockerd"
    local flags
    mapfile -t flags < <(dockerd_flags)
    nohup dockerd "${flags[@]}" >>"$DOCKERD_LOG" 2>&1 &
    local pid=$! i
    for i in $(seq 60); do
        if docker info >/dev/null 2>&1; then
            say "docker engine: started dockerd ${flags[*]} (pid $pid, ready after ${i}s, log $DOCKERD_LOG)"
            return
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$DOCKERD_LOG" >&2; die "dockerd exited"; }
        sleep 1
    done
    tail -n 20 "$DOCKERD_LOG" >&2
    die "dockerd not answering after 60 s"
}

# Docker Hub is out of reach, so the tests' base image is busybox-static imported from a tar.
ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE: present"
        return
    fi
    local tar
    tar=$(mktemp --suffix=.tar)
    busybox_root_tar /bin/busybox "$tar"
    docker import "${BUSYBOX_IMPORT_CHANGES[@]}" "$tar" "$BASE_IMAGE" >/dev/null
    rm -f "$tar"
    say "base image $BASE_IMAGE: built from busybox-static"
}

install_packages
ensure_engine
ensure_base_image
ensure_emulation
ensure_platform_bases
