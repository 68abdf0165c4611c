#!/usr/bin/env bash
# What the integration suites spawn or drive, installed from Debian's packages when one is missing:
# redis-server, haproxy, prometheus and promtool, openssl (jwks-https.test.ts makes a throwaway certificate), python3 with PyYAML, websockets, FastAPI, uvicorn and psycopg2, chromium, PostgreSQL. The
# suites fail rather than skip without them. When everything is there this only looks (well under
# a second). npm's pretest and .ci/run both run it.
#
#   scripts/test-deps.sh [--may-prompt]
#
# It installs as root, or through sudo when sudo works without a password; --may-prompt (.ci/run)
# lets sudo ask for one. Otherwise it stops at once with the one command to run.
set -euo pipefail

PACKAGES="redis-server haproxy prometheus openssl python3-yaml python3-websockets python3-fastapi python3-uvicorn chromium postgresql python3-psycopg2"
INSTALL="apt-get install -y --no-install-recommends $PACKAGES"
# Debian puts haproxy in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
TOOLS="redis-server haproxy prometheus promtool openssl"
# The browser tests drive Debian's chromium (playwright-core, no browser download).
CHROMIUM=/usr/bin/chromium
# deploy.test.ts parses YAML with PyYAML (any python3 on PATH, or Debian's /usr/bin/python3).
has_yaml() { python3 -c 'import yaml' 2>/dev/null || /usr/bin/python3 -c 'import yaml' 2>/dev/null; }
# fastapi-example.test.ts runs examples/fastapi with Debian's FastAPI and uvicorn.
has_fastapi() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -c 'import fastapi, uvicorn' 2>/dev/null; else python3 -c 'import fastapi, uvicorn' 2>/dev/null; fi; }
# python-sdk.test.ts runs the Python SDK's suite with Debian's /usr/bin/python3 (python3 where there
# is none), whose asyncio client needs websockets.
has_websockets() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -c 'import websockets' 2>/dev/null; else python3 -c 'import websockets' 2>/dev/null; fi; }
# The outbox suites start their own PostgreSQL from /usr/lib/postgresql/<version>/bin (any version);
# outbox-python.test.ts drives it from the SDK's helper through Debian's psycopg2.
has_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
has_psycopg2() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -c 'import psycopg2' 2>/dev/null; else python3 -c 'import psycopg2' 2>/dev/null; fi; }

missing=""
for tool in $TOOLS; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
[ -x "$CHROMIUM" ] || missing="$missing chromium"
has_yaml || missing="$missing python3-yaml"
has_websockets || missing="$missing python3-websockets"
has_fastapi || missing="$missing python3-fastapi python3-uvicorn"
has_postgres || missing="$missing postgresql"
has_psycopg2 || missing="$missing python3-psycopg2"
[ -n "$missing" ] || exit 0

if ! command -v apt-get >/dev/null; then
  echo "error: the tests need$missing; install them with this system's package manager (Debian/Ubuntu: $INSTALL)" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif [ "${1:-}" = "--may-prompt" ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
  SUDO="sudo"
else
  echo "error: the tests need what is missing here:$missing. Install the test tools once, then run npm test again:" >&2
  echo "  sudo $INSTALL" >&2
  exit 1
fi
echo "== installing $PACKAGES (Debian packages; missing:$missing)"
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive $INSTALL

for tool in $TOOLS; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool is not on PATH after installing; the integration tests need it" >&2
    exit 1
  fi
done
has_yaml || { echo "error: python3 cannot import yaml after installing python3-yaml" >&2; exit 1; }
has_websockets || { echo "error: python3 cannot import websockets after installing python3-websockets" >&2; exit 1; }
has_postgres || { echo "error: no /usr/lib/postgresql/<version>/bin/initdb after installing postgresql" >&2; exit 1; }
has_psycopg2 || { echo "error: python3 cannot import psycopg2 after installing python3-psycopg2" >&2; exit 1; }
has_fastapi || { echo "error: python3 cannot import fastapi and uvicorn after installing python3-fastapi python3-uvicorn" >&2; exit 1; }
[ -x "$CHROMIUM" ] || { echo "error: $CHROMIUM is missing after installing chromium; the browser tests need it" >&2; exit 1; }
