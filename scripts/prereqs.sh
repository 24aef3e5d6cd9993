#!/usr/bin/env bash
# Checks (and, as root on Debian/Ubuntu, installs) what the main job needs on this machine and nothing
# more: PostgreSQL server binaries, an unprivileged account to run them as when we are root, and cargo.
# Sourced by scripts/up.sh (and by scripts/test-prereqs.sh, which adds what the tests need); prints what
# it does on stderr and fails loudly.
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
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is required: install Rust 1.94.1 or newer from your distribution or rustup"
  exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
  say "note: curl is not installed; the commands tenantctl prints use it (Debian/Ubuntu: apt-get install curl)"
fi
