#!/usr/bin/env bash
# Reads the output of a test run (scripts/test-all.sh keeps one) and prints its last line:
#   N passed, N failed[, N ignored][, N suite(s) skipped: NAME (why), ..][; failed step: NAME]
# Counted: cargo's `test result: ... N passed; N failed; N ignored` lines, node --test's
# `# pass N` / `# fail N` / `# cancelled N` / `# skipped N` (TAP, or `ℹ` with the spec reporter),
# and the fuzz script's `fuzz TARGET: ok|FAILED`. A suite that could not run prints
# `SKIPPED: NAME (why)`; a step that failed, `STEP FAILED: NAME`.
# Exits 1 when anything failed, a step failed, or a suite was skipped that SC_ALLOW_SKIP (a
# comma-separated list of suite names, e.g. SC_ALLOW_SKIP=fuzz) does not allow: a green run
# never hides a skipped suite.
# Usage: scripts/test-summary.sh LOG
set -euo pipefail

log=${1:?usage: scripts/test-summary.sh LOG}
[ -r "$log" ] || { echo "test-summary: cannot read $log" >&2; exit 2; }

LC_ALL=C.UTF-8 awk -v allow=",${SC_ALLOW_SKIP:-}," '
  function num(s) { gsub(/[^0-9]/, "", s); return s + 0 }
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed/) passed += num($i)
      if ($(i + 1) ~ /^failed/) failed += num($i)
      if ($(i + 1) ~ /^ignored/) ignored += num($i)
    }
    next
  }
  /^(#|ℹ) (pass|fail|cancelled|skipped) [0-9]+$/ {
    if ($2 == "pass") passed += $3
    else if ($2 == "skipped") ignored += $3
    else failed += $3
    next
  }
  /^fuzz [A-Za-z0-9_]+: ok$/ { passed++; next }
  /^fuzz [A-Za-z0-9_]+: FAILED/ { failed++; next }
  /^SKIPPED: / {
    line = substr($0, 10)
    name = line; sub(/ .*/, "", name)
    why = line; sub(/^[^ ]* ?/, "", why)
    if (name in skipped) next
    skipped[name] = 1; nskipped++
    note = name (why != "" ? " " why : "")
    if (index(allow, "," name ",") == 0) {
      note = note " [not allowed: SC_ALLOW_SKIP=" name " allows it]"
      refused++
    }
    skips = skips (skips == "" ? "" : ", ") note
    next
  }
  /^STEP FAILED: / { steps[++nsteps] = substr($0, 14); next }
  END {
    out = passed + 0 " passed, " failed + 0 " failed"
    if (ignored > 0) out = out ", " ignored " ignored"
    if (nskipped > 0) out = out ", " nskipped " suite" (nskipped > 1 ? "s" : "") " skipped: " skips
    # A suite that refused to be skipped fails its step; it is named once, as skipped.
    for (i = 1; i <= nsteps; i++) if (!(steps[i] in skipped)) {
      out = out "; failed step: " steps[i] " (the steps after it did not run)"
    }
    print out
    exit (failed > 0 || nsteps > 0 || refused > 0) ? 1 : 0
  }
' "$log"
