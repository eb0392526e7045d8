#!/bin/sh
# The entrypoint of Slipway's image. Started as root, it looks up the group
# that owns the Docker socket (root:docker, with a number that differs from
# host to host, or root:root), and runs `slipway ARGS` as the user slipway
# with that group added, so that nothing needs setting by hand. Started as
# another user (docker run --user), it runs Slipway as that user.
set -eu
USER_NAME=${SLIPWAY_RUN_AS:-slipway}

if [ "$(id -u)" != 0 ]; then
    exec slipway "$@"
fi

# The socket Slipway will use: DOCKER_HOST's when it names one.
socket=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
    '') ;;
    unix://*) socket=${DOCKER_HOST#unix://} ;;
    *) socket= ;;
esac

uid=$(id -u "$USER_NAME")
gid=$(id -g "$USER_NAME")
groups=$gid
if [ -n "$socket" ] && [ -S "$socket" ]; then
    socket_gid=$(stat -c %g "$socket")
    # A name for it, so that `id` reads well; the number is what counts.
    getent group "$socket_gid" >/dev/null 2>&1 \
        || groupadd --gid "$socket_gid" docker-host 2>/dev/null \
        || true
    groups="$gid,$socket_gid"
    echo "slipway-entrypoint: running as $USER_NAME ($uid) in the group of $socket ($socket_gid)" >&2
elif [ -n "$socket" ]; then
    echo "slipway-entrypoint: no socket at $socket; running as $USER_NAME ($uid)" >&2
fi

export HOME=/data
exec setpriv --reuid="$uid" --regid="$gid" --groups="$groups" --inh-caps=-all -- slipway "$@"
