#!/usr/bin/env bash
# Runs an example program and checks its output against independent
# reference values (data/*/REFERENCE.md). The program must exit 0.
#
#   check.sh PROGRAM [ARG...] -- EXPECTATION...
#
# EXPECTATION is one of
#   WORD=VALUE      the number after the last WORD in the output equals VALUE
#                   to the precision VALUE is written with (half a unit of
#                   its last digit: REFERENCE.md gives maxima to 2-3 decimals)
#   WORD=VALUE@REL  the same number, to relative difference REL
#   ~TEXT           the output contains TEXT
set -uo pipefail
cmd=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do cmd+=("$1"); shift; done
shift || { echo "check.sh: no expectations after --" >&2; exit 2; }

out=$("${cmd[@]}" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: ${cmd[0]} exited with $rc"; exit 1; }

fail=0
for e in "$@"; do
    if [[ $e == ~* ]]; then
        if grep -qF -- "${e#\~}" <<<"$out"; then echo "ok: output contains '${e#\~}'"
        else echo "FAIL: output lacks '${e#\~}'"; fail=1; fi
        continue
    fi
    word=${e%%=*}; value=${e#*=}
    awk -v word="$word" -v spec="$value" '
        { for (i = 1; i < NF; i++) if ($i == word) got = $(i + 1) }
        END {
            n = split(spec, s, "@"); want = s[1]
            if (n == 2) { tol = s[2] * (want < 0 ? -want : want); how = "relative " s[2] }
            else { dec = index(want, ".") ? length(want) - index(want, ".") : 0
                   tol = 0.5 * 10 ^ -dec * (1 + 1e-9); how = "as written" }
            d = got - want; if (d < 0) d = -d
            ok = got != "" && d <= tol
            if (n == 2) d = d / (want < 0 ? -want : want)
            printf "%s: %s %s, reference %s (%s), difference %.3g\n",
                   ok ? "ok" : "FAIL", word, got == "" ? "missing" : got, want, how, d
            exit !ok }' <<<"$out" || fail=1
done
exit $fail
