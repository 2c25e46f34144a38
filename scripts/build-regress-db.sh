#!/usr/bin/env bash
# Build PostgreSQL's regression database — the corpus PostgreSQL's own pg_upgrade test migrates — once, and
# cache it for test/conformance.regress.test.ts.
#
#   bash scripts/build-regress-db.sh           # idempotent: exits at once when the cache is complete
#   REGRESS_REBUILD=1 bash scripts/build-regress-db.sh
#
# Steps (each skipped when its result is already in the cache):
#   1. the postgresql-15 source package from Debian (a deb-src entry is added when missing; root only), only the
#      folders we need extracted: src/test/regress (schedule, sql, expected, data, regress.c) and contrib/spi;
#   2. regress.so, refint.so, autoinc.so built with PGXS against postgresql-server-dev-15 (pg_regress itself ships
#      in postgresql-server-dev-15, so no ./configure of the source tree is needed);
#   3. the installcheck schedule (parallel_schedule) run by pg_regress against a throwaway Debian PostgreSQL 15
#      server on a free loopback port. Failing regression tests are expected (other locale, other minor version):
#      what we keep is the `regression` database they leave;
#   4. the result: .cache/regress/regression.dump (pg_dump -Fc --create) and .cache/regress/globals.sql (the roles
#      the suite leaves, pg_dumpall --roles-only), which the tests restore into their own servers (a few seconds)
#      instead of rerunning the suite; .cache/regress/lib holds the three libraries. The suite's functions name
#      them by absolute path (that folder), so a Debian PostgreSQL 15 server on this machine loads them as they are.
#
# Exit status 0 with the cache complete; 2 when the source package or build prerequisites cannot be had (the
# test group then skips and names the reason written to .cache/regress/UNAVAILABLE).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache/regress
PGBIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PGBIN/pg_config
mkdir -p "$CACHE"

unavailable() { echo "$*" > "$CACHE/UNAVAILABLE"; echo "build-regress-db: $*" >&2; exit 2; }
log() { echo "build-regress-db: $*" >&2; }

if [ -z "${REGRESS_REBUILD:-}" ] && [ -f "$CACHE/COMPLETE" ] && [ -f "$(cat "$CACHE/LIBDIR" 2>/dev/null)/regress.so" ]; then
  log "cache complete: $CACHE"; exit 0
fi
rm -f "$CACHE/UNAVAILABLE" "$CACHE/COMPLETE"
START=$(date +%s)

[ -x "$PGBIN/postgres" ] || unavailable "no PostgreSQL 15 server in $PGBIN (apt-get install postgresql-15)"
[ -x "$PG_CONFIG" ] && [ -f "$($PG_CONFIG --pgxs)" ] || unavailable "no PGXS for PostgreSQL 15 (apt-get install postgresql-server-dev-15)"
PGXSDIR=$(dirname "$(dirname "$(dirname "$($PG_CONFIG --pgxs)")")")
PG_REGRESS=$PGXSDIR/src/test/regress/pg_regress
[ -x "$PG_REGRESS" ] || unavailable "no pg_regress in $PGXSDIR (postgresql-server-dev-15)"
command -v gcc >/dev/null && command -v make >/dev/null || unavailable "no C compiler/make (apt-get install build-essential)"

# --- 1. the source package -------------------------------------------------------------------------------------
SRC=$CACHE/src
if [ ! -f "$SRC/src/test/regress/parallel_schedule" ] || [ ! -f "$SRC/contrib/spi/refint.c" ]; then
  have_source() { apt-cache showsrc postgresql-15 2>/dev/null | grep -c '^Version:' >/dev/null; }
  if ! have_source; then
    if [ "$(id -u)" = 0 ] && ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # Debian's deb822 sources list only binary packages: add the same archives for source packages.
      if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed -n 's/^Types: deb$/Types: deb-src/; /^#/d; p' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/pgferry-deb-src.sources
      elif [ -f /etc/apt/sources.list ]; then
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/pgferry-deb-src.list
      fi
      apt-get update -qq || true
    fi
  fi
  have_source || unavailable "no deb-src entry for postgresql-15 (add 'Types: deb-src' for the Debian archive and run apt-get update, as root)"
  DL=$CACHE/download
  rm -rf "$DL" && mkdir -p "$DL"
  installed=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
  # The installed version's source first, then every other version the archive lists (newest first): an index
  # may list a point release whose files are gone. Any 15.x builds regress.so for the installed 15 (the server
  # ABI is stable within a major).
  versions=$( { echo "$installed"; apt-cache showsrc postgresql-15 2>/dev/null | sed -n 's/^Version: //p' | sort -rV; } | awk 'NF && !seen[$0]++')
  got=
  for v in $versions; do
    rm -f "$DL"/*
    if ( cd "$DL" && chmod 777 . && apt-get source --download-only -qq "postgresql-15=$v" ) >/dev/null 2>&1; then got=$v; break; fi
  done
  [ -n "$got" ] || unavailable "apt-get source postgresql-15 failed for every listed version ($(echo $versions)): no network or the archive lacks the files"
  orig=$(ls "$DL"/postgresql-15_*.orig.tar.* | head -1)
  top=$(basename "$orig" | sed -E 's/^postgresql-15_([^.]+\.[0-9]+)\.orig.*/postgresql-\1/')
  rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
  tar -xf "$orig" -C "$SRC.tmp" --strip-components=1 "$top/src/test/regress" "$top/contrib/spi"
  basename "$orig" > "$SRC.tmp/SOURCE"
  rm -rf "$SRC" && mv "$SRC.tmp" "$SRC" && rm -rf "$DL"
  log "source: $(cat "$SRC/SOURCE") ($(( $(date +%s) - START )) s)"
fi

# --- 2. the suite's C libraries --------------------------------------------------------------------------------
LIB=$CACHE/lib
if [ ! -f "$LIB/regress.so" ] || [ ! -f "$LIB/refint.so" ] || [ ! -f "$LIB/autoinc.so" ]; then
  B=$CACHE/build
  rm -rf "$B" && mkdir -p "$B"
  cp "$SRC/src/test/regress/regress.c" "$SRC/contrib/spi/refint.c" "$SRC/contrib/spi/autoinc.c" "$B/"
  # REFINT_VERBOSE: the regression tests expect refint's notices (contrib/spi/Makefile sets it the same way).
  printf 'MODULES = regress refint autoinc\nPG_CPPFLAGS = -DREFINT_VERBOSE\nPG_CONFIG = %s\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' "$PG_CONFIG" > "$B/Makefile"
  # with_llvm=no: no JIT bitcode (the suite does not need it; saves the clang step).
  make -s -C "$B" with_llvm=no >/dev/null || unavailable "building regress.so/refint.so/autoinc.so with PGXS failed (see make -C $B)"
  mkdir -p "$LIB" && cp "$B"/regress.so "$B"/refint.so "$B"/autoinc.so "$LIB/" && rm -rf "$B"
  log "libraries built ($(( $(date +%s) - START )) s)"
fi

# --- 3. the installcheck schedule against a throwaway server ---------------------------------------------------
# Run as the postgres OS user when we are root (the server refuses root; the suite's COPY … TO writes files the
# server creates in the output folder).
RUNAS=()
if [ "$(id -u)" = 0 ]; then
  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  RUNAS=(runuser -u postgres --)
fi
WORK=$(mktemp -d /tmp/pgferry-regress-XXXXXX)
chmod 755 "$WORK"
# The suite's inputs, where the server (COPY … FROM its data files) and pg_regress can read them whoever owns the checkout.
cp -r "$SRC/src/test/regress" "$WORK/regress"
# The libraries: the suite's functions keep their absolute path, and every server that restores the dump (as the
# postgres OS user) must read them. A checkout under a private home folder is not readable: use /var/tmp then.
DLPATH=$LIB
if [ ${#RUNAS[@]} -gt 0 ] && ! runuser -u postgres -- test -r "$LIB/regress.so"; then
  DLPATH=/var/tmp/pgferry-regress-lib
  mkdir -p "$DLPATH" && cp "$LIB"/*.so "$DLPATH/" && chmod 755 "$DLPATH" && chmod 644 "$DLPATH"/*.so
fi
if [ ${#RUNAS[@]} -gt 0 ]; then chown -R postgres: "$WORK"; fi
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cleanup() {
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export LC_ALL=C.UTF-8 LC_MESSAGES=C PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --lc-messages=C --no-sync >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -w -t 60 -l "$WORK/server.log" start \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK -c fsync=off -c max_prepared_transactions=10 -c max_connections=100" >/dev/null
# The suite's functions name their library by absolute path (\getenv libdir PG_LIBDIR = --dlpath): the cache.
SUITE_START=$(date +%s)
set +e
( cd "$WORK" && "${RUNAS[@]}" "$PG_REGRESS" --inputdir="$WORK/regress" --outputdir="$WORK/out" \
    --bindir="$PGBIN" --dlpath="$DLPATH" --schedule="$WORK/regress/parallel_schedule" --max-concurrent-tests=20 \
    --host=127.0.0.1 --port="$PORT" --user=postgres ) > "$WORK/regress.out" 2>&1
regress_rc=$?
set -e
summary=$(grep -E 'tests (passed|failed)|of [0-9]+ tests' "$WORK/regress.out" | tail -2 | tr '\n' ' ')
log "installcheck schedule: exit $regress_rc, $summary($(( $(date +%s) - SUITE_START )) s)"
cp "$WORK/regress.out" "$CACHE/installcheck.out"
[ -f "$WORK/out/regression.diffs" ] && cp "$WORK/out/regression.diffs" "$CACHE/installcheck.diffs"
"$PGBIN/psql" -X -qAt -d regression -c 'SELECT 1' >/dev/null 2>&1 ||
  unavailable "the installcheck schedule left no regression database (see $CACHE/installcheck.out)"

# --- 4. the dump -----------------------------------------------------------------------------------------------
"$PGBIN/pg_dump" -Fc --create -d regression -f "$CACHE/regression.dump.tmp"
"$PGBIN/pg_dumpall" --roles-only --no-role-passwords > "$CACHE/globals.sql.tmp"
mv "$CACHE/regression.dump.tmp" "$CACHE/regression.dump"
mv "$CACHE/globals.sql.tmp" "$CACHE/globals.sql"
# The library folder the suite's C functions name (a server must be able to read it).
echo "$DLPATH" > "$CACHE/LIBDIR"
"$PGBIN/psql" -X -qAt -d regression -c "SELECT count(*) FILTER (WHERE relkind IN ('r','p')) || ' tables, ' || count(*) || ' relations' FROM pg_class WHERE oid >= 16384" > "$CACHE/SUMMARY"
log "regression database: $(cat "$CACHE/SUMMARY"); dump $(du -h "$CACHE/regression.dump" | cut -f1)"
date -u +%FT%TZ > "$CACHE/COMPLETE"
log "done in $(( $(date +%s) - START )) s"
