# cli_checks.sh — the check helpers of the CLI test scripts (sourced; they count into $fails / $passes and
# write command output under $T).
fail() { echo "FAIL $*"; fails=$((fails+1)); }
pass() { passes=$((passes+1)); }
# expect_fail "description" "regex the message must match" command...   (exit 1..127 and a matching message)
expect_fail() {
  local what="$1" pattern="$2"; shift 2
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then fail "$what: exit $rc (want 1..127): $out"; return; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then fail "$what: message does not match /$pattern/: $out"; return; fi
  pass
}
# expect_ok "description" command...   (stdout → $T/stdout, stderr → $T/stderr)
expect_ok() {
  local what="$1"; shift
  "$@" >"$T/stdout" 2>"$T/stderr"; local rc=$?
  if [ $rc -ne 0 ]; then fail "$what: exit $rc: $(cat "$T/stderr")"; return 1; fi
  pass
}
no_file() { if ls -d "$1"* >/dev/null 2>&1; then fail "$2: left $(ls -d "$1"*)"; else pass; fi; }
has() { if grep -qE -- "$2" "$3"; then pass; else fail "$1: /$2/ not in $(basename "$3"): $(head -c 600 "$3")"; fi; }
exists() { if [ -s "$1" ]; then pass; else fail "missing or empty: $1"; fi; }
