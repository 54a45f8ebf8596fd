#!/usr/bin/env bash
# The shared library exports exactly the functions listed in the version
# script, every one bound to a PERSISTE_ version node.
set -euo pipefail
lib="$1"; map="$2"
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | grep -v '^PERSISTE_' | sort)
names=$(echo "$exported" | sed 's/@.*//' | sort)
listed=$(sed -n 's/^[[:space:]]*\(persiste_[a-z0-9_]*\);.*/\1/p' "$map" | sort)
if [ "$names" != "$listed" ]; then
    echo "exported symbols differ from $map (< listed, > exported):"
    diff <(echo "$listed") <(echo "$names") || true
    exit 1
fi
unversioned=$(echo "$exported" | grep -v '@@\?PERSISTE_' || true)
if [ -n "$unversioned" ]; then
    echo "exported without a version node: $unversioned"
    exit 1
fi
echo "$(echo "$listed" | wc -l) exported symbols, all versioned, exactly as listed in $map"
