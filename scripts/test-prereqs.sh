#!/usr/bin/env bash
# What the tests need on top of the main job's prerequisites (scripts/prereqs.sh): PgBouncer, jq, curl,
# the Python tools (in a virtual environment), checkov and schemathesis (each in its own), Node.js 20+
# with oidc-provider, Chromium with playwright-core, and the supply-chain tools. Sourced by scripts/test.sh; as root on Debian/Ubuntu
# it installs what is missing, otherwise it says what to install.
set -euo pipefail
source scripts/prereqs.sh
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  apt_install pgbouncer || { say "PgBouncer is required by the pooled-connection isolation test"; exit 1; }
fi
if ! command -v jq >/dev/null 2>&1; then
  apt_install jq || { say "jq is required by the test of the audit export's offline check (scripts/verify-audit-export.sh)"; exit 1; }
fi
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl || { say "curl is required by the end-to-end test of the README's main command"; exit 1; }
fi
# The Python tools live in a virtual environment of their own (PEP 668: current Debian and Ubuntu
# refuse `pip install` into the system's Python), put first on PATH so the tests' `python3` is its.
# moto is pinned exactly: tests/clients/moto_server.py fills four gaps in its CloudFormation by
# patching its internals, which can move between releases.
PY_VENV="${TENANTCTL_PY_VENV:-/var/tmp/tenantctl-py}"
if [ ! -x "$PY_VENV/bin/python3" ]; then
  say "creating the Python virtual environment $PY_VENV"
  python3 -m venv "$PY_VENV" >&2 || { say "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
fi
export PATH="$PY_VENV/bin:$PATH"
if ! python3 -c 'import openai, anthropic, jwt, cryptography, moto, boto3; assert moto.__version__ == "5.2.1"' >/dev/null 2>&1 || ! command -v sqlmap >/dev/null 2>&1 || ! command -v cfn-lint >/dev/null 2>&1 || ! command -v cargo-lambda >/dev/null 2>&1; then
  say "installing the Python tools the tests use into $PY_VENV: the official openai and anthropic SDKs, PyJWT, cryptography, sqlmap, cfn-lint, moto, cargo-lambda"
  python3 -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<4' 'anthropic>=0.40,<1' 'pyjwt[crypto]>=2.8,<3' 'sqlmap==1.10.10' 'cfn-lint>=1.20,<2' 'moto[server]==5.2.1' 'cargo-lambda==1.9.2' >&2 \
    || { say "could not install them; run: $PY_VENV/bin/pip install openai anthropic 'pyjwt[crypto]' sqlmap cfn-lint 'moto[server]==5.2.1' 'cargo-lambda==1.9.2'"; exit 1; }
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
# The AWS CLI (the runbook of a new AWS account uses it, against moto): its own environment too, since
# it pins botocore exactly.
AWSCLI_VENV="${TENANTCTL_AWSCLI_VENV:-/var/tmp/tenantctl-awscli}"
if [ ! -x "$AWSCLI_VENV/bin/aws" ]; then
  say "installing the AWS CLI into $AWSCLI_VENV (the AWS runbook's test runs it against moto)"
  { python3 -m venv "$AWSCLI_VENV" && "$AWSCLI_VENV/bin/pip" install --quiet --disable-pip-version-check 'awscli>=1.36,<2'; } >&2 \
    || { say "could not install the AWS CLI; run: python3 -m venv $AWSCLI_VENV && $AWSCLI_VENV/bin/pip install 'awscli>=1.36,<2'"; exit 1; }
fi
mkdir -p "$CHECKOV_VENV/tools"
ln -sf "$CHECKOV_VENV/bin/checkov" "$CHECKOV_VENV/tools/checkov"
ln -sf "$AWSCLI_VENV/bin/aws" "$CHECKOV_VENV/tools/aws"
export PATH="$PATH:$CHECKOV_VENV/tools"
if ! command -v node >/dev/null 2>&1; then
  apt_install nodejs npm || { say "Node.js 20+ is required by the OpenID Provider interop test"; exit 1; }
fi
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$NODE_MAJOR" -lt 20 ]; then
  say "Node.js 20 or newer is required by the OpenID Provider interop test (oidc-provider); this is $(node --version 2>/dev/null || echo none): install a current Node.js (https://nodejs.org or your distribution's nodejs 20+)"
  exit 1
fi
if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  say "installing oidc-provider (a certified OpenID Provider) for the identity interop test"
  npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error >&2 \
    || { say "could not install it; run: npm ci --prefix tests/idp"; exit 1; }
fi
# The web console's browser test: Debian's Chromium, driven headless by playwright-core (no browser
# download: playwright-core drives the system's binary).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  apt_install --no-install-recommends chromium fonts-dejavu-core || { say "Chromium is required by the console's browser test (Debian/Ubuntu: apt-get install chromium), or set CHROMIUM to a Chromium binary"; exit 1; }
fi
if [ ! -d tests/console/node_modules/playwright-core ]; then
  say "installing playwright-core (drives Chromium) for the console's browser test"
  npm ci --prefix tests/console --no-audit --no-fund --loglevel=error >&2 \
    || { say "could not install it; run: npm ci --prefix tests/console"; exit 1; }
fi
# The supply-chain checks (scripts/supply-chain.sh), pinned, built once into cargo's bin directory.
for tool in cargo-deny@0.20.2 cargo-machete@0.9.2; do
  name=${tool%@*}; version=${tool#*@}
  if ! "$name" --version 2>/dev/null | grep -q "$version"; then
    say "installing $name $version (cargo install --locked; once per machine)"
    cargo install --quiet --locked "$name" --version "$version" >&2 \
      || { say "could not install it; run: cargo install --locked $name --version $version"; exit 1; }
  fi
done
