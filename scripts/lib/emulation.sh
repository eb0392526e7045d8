# Sourced by test-env.sh and engines.sh: what the multi-platform tests need (tests/it/platforms.rs).
# The caller defines say and die, and sources common.sh first.
#
# Building linux/arm64 on an amd64 machine runs the image's programs under QEMU: the kernel's
# binfmt_misc hands arm64 executables to qemu-aarch64-static (Debian's qemu-user-static;
# binfmt-support registers its handlers).
#
# The base image exists once per platform under its own name, slipway-test-base-ARCH:1, and the
# tests' Dockerfiles pick theirs with `ARG TARGETARCH` / `FROM slipway-test-base-${TARGETARCH}:1`.
# One name for both would not do: Engine 20.10's image store keeps one image per name, so
# importing the arm64 base as slipway-test-base:1 would take that name from the amd64 one.

ARM64_CACHE=/var/cache/slipway-arm64
ARM64_BUSYBOX=$ARM64_CACHE/root/bin/busybox

ensure_emulation() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        [ "$(id -u)" -eq 0 ] || die "binfmt_misc is not mounted and not root to mount it"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        say "binfmt_misc: mounted"
    fi
    apt_install_missing qemu-user-static binfmt-support
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        [ "$(id -u)" -eq 0 ] || die "no binfmt handler for arm64 and not root to register it"
        update-binfmts --enable qemu-aarch64
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        die "the binfmt handler qemu-aarch64 is registered but disabled"
    say "emulation: arm64 through $(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
}

# Debian 12's busybox-static for arm64, fetched with a side apt configuration (its own lists and
# cache) so the machine's apt state and architectures stay as they are.
arm64_busybox() {
    [ -x "$ARM64_BUSYBOX" ] && return
    local apt_dir=$ARM64_CACHE/apt deb
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    local apt=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures=arm64
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
        -o Dir::State::Status=/dev/null -o APT::Sandbox::User=root)
    "${apt[@]}" update >/dev/null
    (cd "$apt_dir/debs" && "${apt[@]}" download busybox-static:arm64 >/dev/null)
    deb=$(ls "$apt_dir"/debs/busybox-static_*_arm64.deb | tail -n 1)
    rm -rf "$ARM64_CACHE/root"
    dpkg-deb -x "$deb" "$ARM64_CACHE/root"
    [ -x "$ARM64_BUSYBOX" ] || die "$deb holds no bin/busybox"
    say "arm64 busybox: $(basename "$deb")"
}

# docker_load_platform ROOT_TAR ARCH NAME: loads ROOT_TAR as a one-layer linux/ARCH image NAME
# (labelled io.slipway.test-base=ARCH), from an archive in `docker save` format written here.
# Not `docker import --platform linux/arm64`: Engine 20.10 ignores that option and records
# amd64, and BuildKit then passes the image over for an arm64 build.
docker_load_platform() {
    local root_tar=$1 arch=$2 name=$3 dir diff_id config config_id
    dir=$(mktemp -d)
    diff_id=$(sha256sum "$root_tar" | cut -d' ' -f1)
    mkdir "$dir/$diff_id"
    cp "$root_tar" "$dir/$diff_id/layer.tar"
    config=$(printf '{"architecture":"%s","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"Labels":{"io.slipway.test-base":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"busybox-static (scripts/lib/emulation.sh)"}]}' "$arch" "$arch" "$diff_id")
    config_id=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
    printf '%s' "$config" >"$dir/$config_id.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
        "$config_id" "$name" "$diff_id" >"$dir/manifest.json"
    tar -C "$dir" -c . | docker load >/dev/null
    rm -rf "$dir"
}

# ensure_platform_base ARCH BUSYBOX: slipway-test-base-ARCH:1 in the engine named by DOCKER_HOST
# (or the default). Its own image, not another name of slipway-test-base:1: the multi-platform
# tests push it to registries, which gives the image repository digests, and other tests read
# slipway-test-base:1's.
ensure_platform_base() {
    local arch=$1 busybox=$2 name="slipway-test-base-$1:1" tar
    if [ "$(docker image inspect "$name" --format '{{index .Config.Labels "io.slipway.test-base"}}' 2>/dev/null)" = "$arch" ]; then
        say "base image $name: present"
        return
    fi
    tar=$(mktemp --suffix=.tar)
    # Only the host's busybox can list its applets here; every build has the same ones.
    busybox_root_tar "$busybox" "$tar" "$(/bin/busybox --list)"
    docker_load_platform "$tar" "$arch" "$name"
    rm -f "$tar"
    say "base image $name: built from busybox-static ($arch)"
}

# ensure_platform_bases: slipway-test-base-amd64:1 and slipway-test-base-arm64:1.
ensure_platform_bases() {
    ensure_platform_base amd64 /bin/busybox
    arm64_busybox
    ensure_platform_base arm64 "$ARM64_BUSYBOX"
}
