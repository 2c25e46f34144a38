#!/usr/bin/env bash
# The Pulumi CLI v3.248.0 (the version of the pinned @pulumi/pulumi SDK) built from its Go modules into
# .cache/pulumi/bin, for the tests that drive the real engine (test/pulumi.cli.test.ts):
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi @ v3.248.0
#   pulumi-language-nodejs         github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 @ a88168d865b7
#                                  (the v3.248.0 release commit; that module has no tags)
#   pulumi-resource-pulumi-nodejs  the dynamic provider plugin shipped in the @pulumi/pulumi npm package
# `go install …@v3.248.0` refuses (pkg/go.mod has replace directives), so each tool is built from a throwaway
# wrapper module that requires the release modules and copies the one third-party replace (clipboard).
# Release flags: CGO_ENABLED=0 -trimpath -tags osusergo,grpcnotrace, and the version in ldflags (the
# Automation API refuses a CLI whose `pulumi version` is empty). Uses the default Go caches (GOMODCACHE,
# GOCACHE), so a second build is quick. Idempotent: does nothing when the binaries report the right version.
# Needs Go >= 1.24 and the Go module proxy; `npm ci` first (for the plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=v3.248.0
nodejs_commit=a88168d865b7
clipboard_replace='github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e'
dir=.cache/pulumi
bin=$dir/bin
stamp="$version nodejs@$nodejs_commit"

plugin_src=node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs
place_plugin() {
  if [ ! -f "$plugin_src" ]; then
    echo "build-pulumi: $plugin_src is missing: run 'npm ci' first" >&2
    exit 1
  fi
  cp "$plugin_src" "$bin/pulumi-resource-pulumi-nodejs" && chmod +x "$bin/pulumi-resource-pulumi-nodejs"
}

if [ -x "$bin/pulumi" ] && [ -x "$bin/pulumi-language-nodejs" ] &&
   { [ "$(cat "$bin/.version" 2>/dev/null)" = "$stamp" ] || [ "$(cat "$bin/.version" 2>/dev/null)" = "$version nodejs@stand-in" ]; } &&
   [ "$("$bin/pulumi" version 2>/dev/null)" = "$version" ]; then
  place_plugin
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-pulumi: no 'go' on PATH (Go >= 1.24 and the Go module proxy are needed to build the Pulumi CLI)" >&2
  exit 1
fi

mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
ldflags="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version"

# build_tool <wrapper dir> <main package> <module>@<version> <output name>
build_tool() {
  local wrapper=$1 pkg=$2 modver=$3 out=$4
  rm -rf "$wrapper" && mkdir -p "$wrapper"
  cat > "$wrapper/go.mod" <<EOF
module pgferry.local/build-pulumi

go 1.24

replace $clipboard_replace
EOF
  (cd "$wrapper" &&
    go get "$modver" "github.com/pulumi/pulumi/pkg/v3@$version" "github.com/pulumi/pulumi/sdk/v3@$version" &&
    go get "$pkg" &&
    go build -trimpath -tags osusergo,grpcnotrace -ldflags "$ldflags" -o "$root/$bin/$out" "$pkg")
}

start=$(date +%s)
if [ ! -x "$bin/pulumi" ] || [ "$("$bin/pulumi" version 2>/dev/null)" != "$version" ]; then
  build_tool "$dir/src/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "github.com/pulumi/pulumi/pkg/v3@$version" pulumi
fi
if ! build_tool "$dir/src/language-nodejs" github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 \
  "github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@$nodejs_commit" pulumi-language-nodejs; then
  # Some Go module proxies refuse this module ("403 Forbidden: This module version is not available"). Then the
  # repository's minimal host stands in (scripts/pulumi-language-nodejs.js: runs the project's own
  # @pulumi/pulumi/cmd/run as the real host does); the CLI, engine and provider plugin stay the real ones.
  echo "build-pulumi: could not build pulumi-language-nodejs@$nodejs_commit (above); using scripts/pulumi-language-nodejs.js instead" >&2
  printf '#!/bin/sh\n# pgferry stand-in for the Node.js language host (see scripts/build-pulumi.sh)\nexec node "%s" "$@"\n' \
    "$root/scripts/pulumi-language-nodejs.js" > "$bin/pulumi-language-nodejs"
  chmod +x "$bin/pulumi-language-nodejs"
  stamp="$version nodejs@stand-in"
fi

got=$("$bin/pulumi" version)
if [ "$got" != "$version" ]; then
  echo "build-pulumi: built pulumi reports version '$got', expected $version" >&2
  exit 1
fi
echo "$stamp" > "$bin/.version"
place_plugin
echo "Pulumi CLI $version in $bin ($(( $(date +%s) - start )) s)"
