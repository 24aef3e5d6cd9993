#!/usr/bin/env bash
# Security case 68, the supply chain: every dependency from crates.io at the version Cargo.lock
# pins (`--locked` everywhere), none of them yanked, permissive licences only, no unknown source,
# no unused dependency. Run by scripts/test.sh before the tests; needs cargo-deny and cargo-machete
# (scripts/test-prereqs.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "supply-chain: $*" >&2; }
for tool in cargo-deny cargo-machete; do
  command -v "$tool" >/dev/null || { say "$tool is needed: cargo install --locked $tool (scripts/test-prereqs.sh does)"; exit 1; }
done

# Licences, bans (duplicates reported, wildcards refused) and sources, from deny.toml.
cargo deny -L error --locked check --hide-inclusion-graph licenses bans sources

# Advisories need the RustSec database (a git repository on GitHub).
if timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny -L error --locked check --hide-inclusion-graph advisories
else
  say "ADVISORIES NOT CHECKED: the RustSec advisory database (github.com/rustsec/advisory-db) cannot be reached from this machine; run \`cargo deny check advisories\` where it can"
fi

# Yanked versions, against the crates.io index itself (what `cargo deny` would do with the database).
python3 - <<'PY'
import concurrent.futures, json, re, sys, urllib.request
lock = open("Cargo.lock").read()
pkgs = re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry\+https://github.com/rust-lang/crates.io-index"', lock)
def path(name):
    n = name.lower()
    if len(n) <= 2: return f"{len(n)}/{n}"
    if len(n) == 3: return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"
def yanked(p):
    name, version = p
    with urllib.request.urlopen(f"https://index.crates.io/{path(name)}", timeout=30) as r:
        for line in r.read().decode().splitlines():
            v = json.loads(line)
            if v["vers"] == version:
                return v.get("yanked", False)
    raise SystemExit(f"{name} {version} is not in the crates.io index")
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    bad = [p for p, y in zip(pkgs, pool.map(yanked, pkgs)) if y]
if bad:
    sys.exit("yanked versions in Cargo.lock: " + ", ".join(f"{n} {v}" for n, v in bad) + "\nhint: cargo update -p NAME")
print(f"supply-chain: {len(pkgs)} crates.io packages, none yanked", file=sys.stderr)
PY

# Unused dependencies.
cargo machete
say "ok"
