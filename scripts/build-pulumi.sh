#!/usr/bin/env bash
# The Pulumi CLI v3.248.0 (the version of the pinned @pulumi/pulumi SDK) built from its Go modules into
# .cache/pulumi/bin, for the tests that drive the real engine (test/pulumi.cli.test.ts):
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi @ v3.248.0
#   pulumi-language-nodejs         the Node.js language host: github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
#                                  @ a88168d865b7 (the v3.248.0 release commit; that module has no tags). Where the
#                                  Go module proxy refuses that module (here: "403 Forbidden: This module version is
#                                  not available"), the host of sdk/v3 v3.68.0 instead — the last release whose sdk
#                                  module still contained it (from v3.69.0 on it is a module of its own). The host only
#                                  starts the project's own @pulumi/pulumi/cmd/run; the test suite passes with either.
#   pulumi-resource-pulumi-nodejs  the dynamic provider plugin shipped in the @pulumi/pulumi npm package
# `go install …@v3.248.0` refuses (pkg/go.mod has replace directives), so each tool is built from a throwaway
# wrapper module that requires the release modules and copies the one third-party replace (clipboard).
# Release flags: CGO_ENABLED=0 -trimpath -tags osusergo,grpcnotrace, and the version in ldflags (the
# Automation API refuses a CLI whose `pulumi version` is empty). Uses the default Go caches (GOMODCACHE,
# GOCACHE), so a second build is quick. Idempotent: does nothing when the binaries are there in the right versions.
# Needs Go >= 1.24 and the Go module proxy; `npm ci` first (for the plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=v3.248.0
nodejs_commit=a88168d865b7
nodejs_fallback_sdk=v3.68.0
clipboard_replace='github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e'
dir=.cache/pulumi
bin=$dir/bin

plugin_src=node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs
place_plugin() {
  if [ ! -f "$plugin_src" ]; then
    echo "build-pulumi: $plugin_src is missing: run 'npm ci' first" >&2
    exit 1
  fi
  cp "$plugin_src" "$bin/pulumi-resource-pulumi-nodejs" && chmod +x "$bin/pulumi-resource-pulumi-nodejs"
}

# .version: "<cli version> nodejs@<host source>", written once all binaries are built.
stamp=$(cat "$bin/.version" 2>/dev/null || true)
if [ -x "$bin/pulumi" ] && [ -x "$bin/pulumi-language-nodejs" ] &&
   { [ "$stamp" = "$version nodejs@$nodejs_commit" ] || [ "$stamp" = "$version nodejs@sdk-$nodejs_fallback_sdk" ]; } &&
   [ "$("$bin/pulumi" version 2>/dev/null)" = "$version" ]; then
  place_plugin
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-pulumi: no 'go' on PATH (Go >= 1.24 and the Go module proxy are needed to build the Pulumi CLI)" >&2
  exit 1
fi

mkdir -p "$bin"
rm -f "$bin/.version"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# build_tool <wrapper dir> <main package> <output name> <version for ldflags> <module@version>...
build_tool() {
  local wrapper=$1 pkg=$2 out=$3 ldversion=$4
  shift 4
  rm -rf "$wrapper" && mkdir -p "$wrapper"
  cat > "$wrapper/go.mod" <<EOF
module pgferry.local/build-pulumi

go 1.24

replace $clipboard_replace
EOF
  (cd "$wrapper" &&
    go get "$@" &&
    go build -trimpath -tags osusergo,grpcnotrace -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$ldversion" \
      -o "$root/$bin/$out" "$pkg")
}

start=$(date +%s)
if [ ! -x "$bin/pulumi" ] || [ "$("$bin/pulumi" version 2>/dev/null)" != "$version" ]; then
  build_tool "$dir/src/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi pulumi "$version" \
    "github.com/pulumi/pulumi/pkg/v3@$version" "github.com/pulumi/pulumi/sdk/v3@$version"
fi
host="nodejs@$nodejs_commit"
if ! build_tool "$dir/src/language-nodejs" github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 pulumi-language-nodejs "$version" \
  "github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@$nodejs_commit" \
  "github.com/pulumi/pulumi/pkg/v3@$version" "github.com/pulumi/pulumi/sdk/v3@$version"; then
  echo "build-pulumi: pulumi-language-nodejs@$nodejs_commit could not be had (above); building the Node.js language host" \
    "of sdk/v3 $nodejs_fallback_sdk instead" >&2
  build_tool "$dir/src/language-nodejs" github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs pulumi-language-nodejs \
    "$nodejs_fallback_sdk" "github.com/pulumi/pulumi/sdk/v3@$nodejs_fallback_sdk"
  host="nodejs@sdk-$nodejs_fallback_sdk"
fi

got=$("$bin/pulumi" version)
if [ "$got" != "$version" ]; then
  echo "build-pulumi: built pulumi reports version '$got', expected $version" >&2
  exit 1
fi
place_plugin
echo "$version $host" > "$bin/.version"
echo "Pulumi CLI $version ($host) in $bin ($(( $(date +%s) - start )) s)"
