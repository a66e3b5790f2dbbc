#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the test suites need (only as root, only when something is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "install-system-packages: not root or no apt-get; skipping (install .ci/apt-packages*.txt yourself)" >&2
  exit 0
fi
mapfile -t wanted < <(cat .ci/apt-packages.txt .ci/apt-packages-*.txt 2>/dev/null | sed 's/#.*//' | awk 'NF' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
  # nodejs/npm: a Node.js from elsewhere (e.g. NodeSource) is fine.
  case "$pkg" in nodejs) command -v node >/dev/null && continue;; npm) command -v npm >/dev/null && continue;; esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  .ci/install-pgvector.sh
  exit 0
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
.ci/install-pgvector.sh
