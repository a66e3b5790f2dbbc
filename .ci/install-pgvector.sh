#!/usr/bin/env bash
# Build and install the pgvector extension for the installed PostgreSQL (knowledge collections' vector index
# on PostgreSQL, docs/knowledge.md). pgvector is not packaged for Debian bookworm, but its source is in trixie:
# a temporary deb-src entry fetches it (signed by the Debian archive key), it is built against the installed
# server's PG_CONFIG, and the entry is removed again. Root only; does nothing when pgvector is installed.
set -euo pipefail
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null || ! command -v pg_config >/dev/null; then
  echo "install-pgvector: not root, no apt-get or no PostgreSQL; skipping" >&2
  exit 0
fi
pg_config_bin="$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -n1 || true)"
pg_config_bin="${pg_config_bin:-$(command -v pg_config)}"
sharedir="$("$pg_config_bin" --sharedir)"
if [ -f "$sharedir/extension/vector.control" ]; then
  exit 0
fi
major="$("$pg_config_bin" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
export DEBIAN_FRONTEND=noninteractive
sources=/etc/apt/sources.list.d/modeltrain-trixie-src.sources
work="$(mktemp -d)"
cleanup() {
  rm -f "$sources"
  rm -rf "$work"
  apt-get update -qq || true
}
trap cleanup EXIT
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
  /usr/share/keyrings/debian-archive-keyring.gpg >"$sources"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "postgresql-server-dev-$major" build-essential dpkg-dev >/dev/null
(cd "$work" && apt-get source --download-only -qq pgvector && dpkg-source -x --no-check ./pgvector_*.dsc src >/dev/null)
make -C "$work/src" -s PG_CONFIG="$pg_config_bin" OPTFLAGS="" >/dev/null
make -C "$work/src" -s PG_CONFIG="$pg_config_bin" install >/dev/null
echo "install-pgvector: installed pgvector for PostgreSQL $major" >&2
