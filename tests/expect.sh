# expect.sh - what the shell tests share, sourced by them: pass and fail
# counts, ok and bad, and expect.
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN CMD...: CMD exits CODE and its output matches PATTERN.
expect() {
	code=$1 pattern=$2
	shift 2
	out=$("$@" 2>&1)
	got=$?
	if [ "$got" != "$code" ]; then
		bad "$* exited $got, wanted $code: $out"
	elif ! printf '%s\n' "$out" | grep -q -E -- "$pattern"; then
		bad "$* printed no /$pattern/: $out"
	else
		ok
	fi
}
