# Sourced by the set-up scripts (test-env.sh, engines.sh, stand-ins.sh): what they share.
# The caller defines say and die.

# apt_install_missing PKG...: installs those of the Debian packages not installed yet.
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "packages: all present"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]} and not root to install them"
    say "packages: installing ${missing[*]}"
    # Lock::Timeout: wait for an apt/dpkg run that may still be going on in the background.
    local apt=(apt-get -qq -o DPkg::Lock::Timeout=600)
    "${apt[@]}" update >/dev/null
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# Docker Hub is out of reach, so the tests' base is a root folder holding busybox-static,
# imported with `docker import`.

# busybox_root_tar BUSYBOX OUT: writes to OUT a tar of a minimal root whose every applet
# links to the busybox binary at BUSYBOX (any architecture: it is copied, never run
# for the listing when an applet list is given as the third argument).
busybox_root_tar() {
    local busybox=$1 out=$2 applets=${3:-} root applet
    [ -n "$applets" ] || applets=$("$busybox" --list)
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    cp "$busybox" "$root/bin/busybox"
    for applet in $applets; do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    tar -C "$root" -c . >"$out"
    rm -rf "$root"
}

# The `docker import` options that make the tar a usable base.
BUSYBOX_IMPORT_CHANGES=(--change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]')
