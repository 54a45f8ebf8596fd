#!/usr/bin/env bash
# The library's ABI against the committed baseline (abidw XML of the first
# release of this soname): fails on any incompatible change (a removed or
# changed function or type), allows added functions.
#
#   check-abi.sh LIB HEADERS_DIR BASELINE.xml           compare
#   check-abi.sh --update LIB HEADERS_DIR BASELINE.xml  rewrite the baseline
#
# LIB needs DWARF (a debug or debugoptimized build). Rewrite the baseline
# only together with a soversion bump (meson.build), never to make CI pass.
set -euo pipefail
update=0
if [ "${1:-}" = --update ]; then update=1; shift; fi
lib="$1"; headers="$2"; baseline="$3"
if [ $update -eq 1 ]; then
    abidw --headers-dir "$headers" --drop-private-types --no-corpus-path \
        --out-file "$baseline" "$lib"
    echo "wrote $baseline"
    exit 0
fi
rc=0
abidiff --no-added-syms --headers-dir2 "$headers" --drop-private-types \
    "$baseline" "$lib" || rc=$?
# abidiff's status is a bit field: 4 = ABI change, 8 = incompatible change,
# 1 and 2 = its own errors; any of them fails.
if [ $rc -ne 0 ]; then
    echo "abidiff: status $rc: the ABI of $lib differs from $baseline"
    exit 1
fi
echo "ABI of $lib compatible with $baseline"
