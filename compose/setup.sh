#!/bin/sh
# The compose stack's one-shot setup: on first start it makes the registry's
# certificates, a random webhook secret, registry password and API token, the
# registry user and the image signing key; on later starts it leaves all of
# them as they are.
# Values set in compose/.env (SLIPWAY_WEBHOOK_SECRET, SLIPWAY_REGISTRY_PASSWORD,
# SLIPWAY_API_TOKEN) are used instead of random ones when the files are made.
set -eu
CERTS=${SETUP_CERTS_DIR:-/certs}
AUTH=${SETUP_AUTH_DIR:-/auth}
SECRETS=${SLIPWAY_SECRETS_DIR:-/secrets}
SIGNING=${SETUP_SIGNING_DIR:-/signing}
USER_NAME=${SLIPWAY_REGISTRY_USER:-slipway}
# The user the slipway service runs as (compose/Dockerfile).
OWNER=${SETUP_SECRETS_OWNER:-10001}

random() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# keep FILE VALUE: writes the file once, readable by Slipway only.
keep() {
    if [ ! -s "$SECRETS/$1" ]; then
        umask 077
        if [ -n "$2" ]; then printf '%s' "$2"; else random; fi > "$SECRETS/$1.tmp"
        mv "$SECRETS/$1.tmp" "$SECRETS/$1"
        chown "$OWNER" "$SECRETS/$1" 2>/dev/null || true
        echo "setup: generated $1" >&2
        return 0
    fi
    return 1
}

mkdir -p "$SECRETS" "$AUTH" "$CERTS"
test -f "$CERTS/server.crt" || slipway certs --out "$CERTS" --hosts registry,localhost,127.0.0.1
keep webhook_secret "${SLIPWAY_WEBHOOK_SECRET:-}" || true
keep api_token "${SLIPWAY_API_TOKEN:-}" || true
# A new password needs a new htpasswd line.
if keep registry_password "${SLIPWAY_REGISTRY_PASSWORD:-}"; then
    rm -f "$AUTH/htpasswd"
fi
if [ ! -s "$AUTH/htpasswd" ]; then
    slipway registry-user "$USER_NAME" < "$SECRETS/registry_password" > "$AUTH/htpasswd.tmp"
    mv "$AUTH/htpasswd.tmp" "$AUTH/htpasswd"
fi
# The signing key, when the stack mounts a folder for it.
if [ -d "$SIGNING" ]; then
    test -f "$SIGNING/cosign.key" || slipway keygen --out "$SIGNING"
    chown "$OWNER" "$SIGNING/cosign.key" 2>/dev/null || true
fi
