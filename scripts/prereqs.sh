#!/usr/bin/env bash
# Checks (and, as root on Debian/Ubuntu, installs) what tenantctl and its tests need on this machine:
# PostgreSQL server binaries, an unprivileged account to run them as when we are root, and curl.
# Sourced by scripts/up.sh and scripts/test.sh; prints what it does on stderr and fails loudly.
set -euo pipefail

say() { echo "prereqs: $*" >&2; }

have_pg() {
  [ -n "${TENANTCTL_PG_BINDIR:-}" ] && [ -x "$TENANTCTL_PG_BINDIR/initdb" ] && return 0
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $* with apt-get"
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
      apt-get update -qq >&2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    say "missing: $*; install it with your package manager (Debian/Ubuntu: sudo apt-get install $*)"
    return 1
  fi
}

if ! have_pg; then
  apt_install postgresql || { say "PostgreSQL server binaries (initdb, pg_ctl, postgres) are required"; exit 1; }
fi
if [ "$(id -u)" = 0 ] && ! id "${TENANTCTL_PG_USER:-postgres}" >/dev/null 2>&1; then
  say "creating the unprivileged account ${TENANTCTL_PG_USER:-postgres} (initdb and postgres refuse to run as root)"
  useradd --system --create-home "${TENANTCTL_PG_USER:-postgres}"
fi
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  apt_install pgbouncer || { say "PgBouncer is required by the pooled-connection isolation test"; exit 1; }
fi
if ! command -v jq >/dev/null 2>&1; then
  apt_install jq || { say "jq is required by the test of the audit export's offline check (scripts/verify-audit-export.sh)"; exit 1; }
fi
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl || { say "curl is required by the end-to-end test of the README's main command"; exit 1; }
fi
# moto is pinned exactly: tests/clients/moto_server.py fills four gaps in its CloudFormation by
# patching its internals, which can move between releases.
if ! python3 -c 'import openai, anthropic, jwt, cryptography, moto, boto3; assert moto.__version__ == "5.2.1"' >/dev/null 2>&1 || ! command -v sqlmap >/dev/null 2>&1 || ! command -v cfn-lint >/dev/null 2>&1 || ! command -v cargo-lambda >/dev/null 2>&1; then
  say "installing the Python tools the tests use: the official openai and anthropic SDKs, PyJWT, cryptography, sqlmap, cfn-lint, moto, cargo-lambda"
  python3 -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<4' 'anthropic>=0.40,<1' 'pyjwt[crypto]>=2.8,<3' 'sqlmap==1.10.10' 'cfn-lint>=1.20,<2' 'moto[server]==5.2.1' 'cargo-lambda==1.9.2' >&2 \
    || { say "could not install them; run: python3 -m pip install openai anthropic 'pyjwt[crypto]' sqlmap cfn-lint 'moto[server]==5.2.1' 'cargo-lambda==1.9.2'"; exit 1; }
  hash -r
fi
# checkov (the independent IaC scanner) lives in its own virtual environment: its dependencies must not
# move the pinned moto's. Its command is put on PATH (after the system's python).
CHECKOV_VENV="${TENANTCTL_CHECKOV_VENV:-/var/tmp/tenantctl-checkov}"
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  say "installing checkov into $CHECKOV_VENV (the IaC scanner the template tests run)"
  { python3 -m venv "$CHECKOV_VENV" && "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check 'checkov>=3.2,<4'; } >&2 \
    || { say "could not install checkov; run: python3 -m venv $CHECKOV_VENV && $CHECKOV_VENV/bin/pip install checkov"; exit 1; }
fi
# schemathesis (the OpenAPI fuzzer of security case 33) too: its own virtual environment.
SCHEMATHESIS_VENV="${TENANTCTL_SCHEMATHESIS_VENV:-/var/tmp/tenantctl-schemathesis}"
if [ ! -x "$SCHEMATHESIS_VENV/bin/schemathesis" ]; then
  say "installing schemathesis into $SCHEMATHESIS_VENV (the fuzzer the OpenAPI contract test runs)"
  { python3 -m venv "$SCHEMATHESIS_VENV" && "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'; } >&2 \
    || { say "could not install schemathesis; run: python3 -m venv $SCHEMATHESIS_VENV && $SCHEMATHESIS_VENV/bin/pip install 'schemathesis>=4.32,<5'"; exit 1; }
fi
mkdir -p "$CHECKOV_VENV/tools"
ln -sf "$CHECKOV_VENV/bin/checkov" "$CHECKOV_VENV/tools/checkov"
export PATH="$PATH:$CHECKOV_VENV/tools"
if ! command -v node >/dev/null 2>&1; then
  apt_install nodejs npm || { say "Node.js 20+ is required by the OpenID Provider interop test"; exit 1; }
fi
if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  say "installing oidc-provider (a certified OpenID Provider) for the identity interop test"
  npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error >&2 \
    || { say "could not install it; run: npm ci --prefix tests/idp"; exit 1; }
fi
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is required: install Rust from your distribution or rustup"
  exit 1
fi
