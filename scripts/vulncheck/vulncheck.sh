#!/usr/bin/env bash
# make vulncheck: govulncheck over the module's source (./...) and, in binary
# mode, over the given Lambda bootstraps, against a local copy of the Go
# vulnerability database built from the golang.org/x/vulndb module (this
# project's machines reach the Go module proxy, not vuln.go.dev).
#
#   scripts/vulncheck/vulncheck.sh [BOOTSTRAP...]
#
# Environment:
#   VULNDB_VERSION  golang.org/x/vulndb version (default latest, resolved
#                   through the module proxy on each run; a version printed
#                   by an earlier run reproduces it, offline once downloaded)
#   VULNDB_CACHE    where the built databases live (default bin/vulndb)
#   GO              the go command (default go)
#
# govulncheck is the version pinned in scripts/vulncheck/go.mod (go tool).
# Exit status: 0 when no vulnerability is reachable from our code; 3 when
# govulncheck finds one that is called (in source mode) or whose vulnerable
# symbols are in a binary; another non-zero status when a scan could not run.
# Vulnerabilities only in packages or modules we import but do not call are
# listed and do not fail the check.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tools=$root/scripts/vulncheck
GO=${GO:-go}
# Without `make` (which exports it) the image's GOTOOLCHAIN=local cannot
# load this module: use the release go.mod names.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go$(awk '$1 == "go" { print $2; exit }' "$root/go.mod")}

bins=()
for b in "$@"; do
  [ -f "$b" ] || { echo "vulncheck: no such binary: $b" >&2; exit 2; }
  bins+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
done

cache=${VULNDB_CACHE:-$root/bin/vulndb}
case $cache in /*) ;; *) cache=$PWD/$cache ;; esac
db=$("$GO" -C "$tools" run . -go "$GO" -cache "$cache" -version "${VULNDB_VERSION:-latest}")

govulncheck() { "$GO" -C "$tools" tool govulncheck -C "$root" -db "$db" "$@"; }

status=0
scan() { # title, govulncheck arguments...
  local title=$1 rc=0
  shift
  echo
  echo "== $title"
  govulncheck "$@" || rc=$?
  if [ "$rc" -eq 3 ]; then
    status=3
  elif [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
  fi
}

# -show version: the Go release (whose standard library is checked), the
# scanner's version and the database.
scan "source ./..." -show version ./...
for b in "${bins[@]}"; do
  scan "binary ${b#"$root"/}" -mode=binary "$b"
done

echo
case $status in
  0) echo "vulncheck: no reachable vulnerability" ;;
  3) echo "vulncheck: FAILED: reachable vulnerabilities (above)" ;;
  *) echo "vulncheck: FAILED: a scan did not run (status $status)" ;;
esac
exit "$status"
