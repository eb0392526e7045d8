#!/usr/bin/env bash
# Stand-ins, made from Debian's packages, for the images the compose stack
# names (compose/docker-compose.yml, compose/Dockerfile), for a machine that
# can pull no image: `debian:bookworm-slim`, `rust:1-slim-bookworm`,
# `registry:2` and `ngrok/ngrok:latest`, each under its real name and with the
# real image's paths, entrypoint and environment where the stack relies on them.
#
# Idempotent and cached: an image that is already there (a stand-in or the
# real one) is left alone, and debootstrap keeps its packages in
# $SLIPWAY_STAND_IN_CACHE. Every stand-in carries the label
# org.slipway.stand-in.
#
# The machine reaches the package registries through an intercepting proxy,
# so each stand-in takes the host's trust store (/etc/ssl/certs and
# /usr/local/share/ca-certificates), and the Debian ones the host's apt
# settings (Acquire::* lines of /etc/apt/apt.conf.d, and http_proxy if set).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

MIRROR=${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${SLIPWAY_STAND_IN_CACHE:-/var/cache/slipway-stand-ins}
LABEL=org.slipway.stand-in
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "stand-ins: $*"; }
die() { echo "stand-ins: error: $*" >&2; exit 1; }

present() { docker image inspect "$1" >/dev/null 2>&1; }

WORK=$(mktemp -d /var/tmp/slipway-stand-in.XXXXXX)
trap 'rm -rf "$WORK"' EXIT


# The host's trust store, so TLS through the machine's proxy verifies inside.
host_trust() {
    local root=$1
    # Its own links point at absolute paths: copying through them would
    # write to the host's files.
    rm -rf "$root/etc/ssl/certs"
    mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
    cp -rL /etc/ssl/certs/. "$root/etc/ssl/certs/"
    if [ -d /usr/local/share/ca-certificates ]; then
        cp -rL /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    fi
}

# The host's apt settings and Debian's sources as the real images have them.
host_apt() {
    local root=$1 file
    rm -f "$root/etc/apt/sources.list"
    mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Whole files (apt's syntax has blocks), those that set a proxy or how
    # the proxy's answers are checked.
    local n=0
    for file in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        [ -f "$file" ] || continue
        if grep -qiE 'Acquire::(https?::)?(Proxy|Check-Valid-Until|Check-Date)' "$file"; then
            n=$((n + 1))
            cp "$file" "$root/etc/apt/apt.conf.d/99slipway-host-$n"
        fi
    done
    if [ -n "${http_proxy:-}" ]; then
        echo "Acquire::http::Proxy \"$http_proxy\";" >"$root/etc/apt/apt.conf.d/99slipway-host-proxy"
    fi
}

# debootstrap ROOT [PACKAGES]: Debian 12 minbase, packages cached.
bootstrap() {
    local root=$1 include=${2:-}
    mkdir -p "$CACHE/debs"
    local args=(--variant=minbase --cache-dir="$CACHE/debs")
    [ -n "$include" ] && args+=(--include="$include")
    debootstrap "${args[@]}" bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 30 "$WORK/debootstrap.log" >&2
        die "debootstrap failed"
    }
    host_apt "$root"
    host_trust "$root"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
        "$root"/var/cache/apt/*.bin "$root"/dev/*
}

# import ROOT NAME CHANGE...: the folder as the image NAME.
import() {
    local root=$1 name=$2
    shift 2
    local changes=(--change "LABEL $LABEL=scripts/stand-ins.sh")
    local change
    for change in "$@"; do changes+=(--change "$change"); done
    tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" - "$name" >/dev/null
    say "$name: made"
}

# A root holding busybox-static and its applets.
busybox_root() {
    local root=$1 applet
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" "$root/tmp"
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    host_trust "$root"
}

debian_slim() {
    local name=debian:bookworm-slim root="$WORK/debian"
    if present "$name"; then say "$name: present"; return; fi
    apt_install_missing debootstrap
    bootstrap "$root"
    import "$root" "$name" "ENV PATH=$STD_PATH" 'CMD ["bash"]'
    rm -rf "$root"
}

rust_slim() {
    local name=rust:1-slim-bookworm root="$WORK/rust"
    if present "$name"; then say "$name: present"; return; fi
    apt_install_missing debootstrap
    command -v rustup >/dev/null || die "no rustup on this machine to copy a toolchain from"
    local rustup_home toolchain version
    rustup_home=$(rustup show home)
    toolchain=$(rustup default | awk '{print $1}')
    [ -d "$rustup_home/toolchains/$toolchain" ] || die "toolchain $toolchain not under $rustup_home"
    version=$("$rustup_home/toolchains/$toolchain/bin/rustc" --version | awk '{print $2}')
    bootstrap "$root" ca-certificates,gcc,libc6-dev,wget
    # Where the real image keeps them, with the same permissions.
    mkdir -p "$root/usr/local/rustup/toolchains" "$root/usr/local/cargo/bin"
    cp -a "$(readlink -f "$rustup_home/toolchains/$toolchain")" "$root/usr/local/rustup/toolchains/$toolchain"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" \
        >"$root/usr/local/rustup/settings.toml"
    cp "$(command -v rustup)" "$root/usr/local/cargo/bin/rustup"
    local tool
    for tool in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-lldb; do
        ln -s rustup "$root/usr/local/cargo/bin/$tool"
    done
    chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo"
    import "$root" "$name" \
        "ENV RUSTUP_HOME=/usr/local/rustup" \
        "ENV CARGO_HOME=/usr/local/cargo" \
        "ENV PATH=/usr/local/cargo/bin:$STD_PATH" \
        "ENV RUST_VERSION=$version" \
        'CMD ["bash"]'
    rm -rf "$root"
}

registry_2() {
    local name=registry:2 root="$WORK/registry"
    if present "$name"; then say "$name: present"; return; fi
    apt_install_missing docker-registry busybox-static
    busybox_root "$root"
    cp /usr/bin/docker-registry "$root/bin/registry"
    # Its shared libraries (Debian builds it with cgo).
    local lib
    for lib in $(ldd /usr/bin/docker-registry | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    mkdir -p "$root/etc/docker/registry" "$root/var/lib/registry"
    cat >"$root/etc/docker/registry/config.yml" <<'EOF'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
    # The real image's entrypoint: a config file or a subcommand goes to `registry`.
    cat >"$root/entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
EOF
    chmod 755 "$root/entrypoint.sh"
    import "$root" "$name" "ENV PATH=$STD_PATH" \
        'ENTRYPOINT ["/entrypoint.sh"]' 'CMD ["/etc/docker/registry/config.yml"]' \
        'VOLUME ["/var/lib/registry"]' 'EXPOSE 5000'
    rm -rf "$root"
}

ngrok_latest() {
    local name=ngrok/ngrok:latest root="$WORK/ngrok"
    if present "$name"; then say "$name: present"; return; fi
    apt_install_missing busybox-static
    busybox_root "$root"
    # A shell, and an `ngrok` that says it is none.
    cat >"$root/bin/ngrok" <<'EOF'
#!/bin/sh
echo "ngrok stand-in (scripts/stand-ins.sh): no tunnel here" >&2
exit 1
EOF
    chmod 755 "$root/bin/ngrok"
    import "$root" "$name" "ENV PATH=$STD_PATH" 'ENTRYPOINT ["/bin/ngrok"]' 'CMD ["--help"]'
    rm -rf "$root"
}

docker info >/dev/null 2>&1 || die "the Docker Engine does not answer"
case "${1:-all}" in
    all)
        debian_slim
        rust_slim
        registry_2
        ngrok_latest
        ;;
    *) die "usage: $0 [all]" ;;
esac
