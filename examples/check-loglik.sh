#!/usr/bin/env bash
# Runs the loglik example on bundled data and compares its total with the
# independent reference value (REFERENCE.md) to 1e-9 relative.
set -euo pipefail
exe="$1"; tree="$2"; table="$3"; gain="$4"; loss="$5"; cond="$6"; expected="$7"
out=$("$exe" "$tree" "$table" "$gain" "$loss" "$cond")
echo "$out"
got=$(echo "$out" | awk '/^log-likelihood/ {print $2}')
awk -v g="$got" -v e="$expected" 'BEGIN {
    d = (g - e) / e; if (d < 0) d = -d
    printf "reference %s, got %s, relative difference %.3g\n", e, g, d
    exit !(g != "" && d < 1e-9) }'
