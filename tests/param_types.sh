#!/bin/sh
# param_types.sh - a parameter row whose field has the wrong C type does not
# compile (like the kernel's param_check_##type): MC_PARAM_INT on a double,
# MC_PARAM_FLOAT on an int, MC_PARAM_LIST on a char *, MC_PARAM_MAP on a
# struct mc_list. The same rows on fields of the right types compile, so a
# failure is the type check and nothing else.
set -u
: "${MCOMP_SRCDIR:?run through make check}"
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-ptypes-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# try NAME FIELD-DECLARATION ROW: writes NAME.c, a table with the one row.
try() {
	cat > "$tmp/$1.c" <<EOT
#include <mcomp/param.h>
struct conf { $2; };
const char *const ch[] = { "a", "b", NULL };
const struct mc_param_def table[] = { $3, MC_PARAM_END };
EOT
	$cc -std=gnu11 -fsyntax-only -I"$MCOMP_SRCDIR/include" "$tmp/$1.c" > "$tmp/$1.log" 2>&1
}

# compiles NAME FIELD ROW / refused NAME FIELD ROW
compiles() { try "$@" && ok || bad "$1 did not compile: $(cat "$tmp/$1.log")"; }
refused() {
	if try "$@"; then
		bad "$1 compiled, but its field has the wrong type"
	elif grep -q 'has the wrong C type' "$tmp/$1.log"; then
		ok
	else
		bad "$1 failed otherwise than by the type check: $(cat "$tmp/$1.log")"
	fi
}

compiles int_ok 'int x' 'MC_PARAM_INT(struct conf, x, "1", 0, 9, "h")'
refused int_on_double 'double x' 'MC_PARAM_INT(struct conf, x, "1", 0, 9, "h")'
compiles float_ok 'double x' 'MC_PARAM_FLOAT(struct conf, x, "1", 0, 9, "h")'
refused float_on_int 'int x' 'MC_PARAM_FLOAT(struct conf, x, "1", 0, 9, "h")'
refused float_on_float 'float x' 'MC_PARAM_FLOAT(struct conf, x, "1", 0, 9, "h")'
compiles bool_ok 'int x' 'MC_PARAM_BOOL(struct conf, x, "true", "h")'
refused bool_on_char 'char x' 'MC_PARAM_BOOL(struct conf, x, "true", "h")'
compiles string_ok 'char *x' 'MC_PARAM_STRING(struct conf, x, "a", "h")'
refused string_on_const 'const char *x' 'MC_PARAM_STRING(struct conf, x, "a", "h")'
compiles enum_ok 'int x' 'MC_PARAM_ENUM(struct conf, x, "a", ch, "h")'
compiles list_ok 'struct mc_list x' 'MC_PARAM_LIST(struct conf, x, MC_PARAM_TINT, "[]", 0, 0, "h")'
refused list_on_string 'char *x' 'MC_PARAM_LIST(struct conf, x, MC_PARAM_TINT, "[]", 0, 0, "h")'
compiles map_ok 'struct mc_map x' 'MC_PARAM_MAP(struct conf, x, MC_PARAM_TINT, "{}", 0, 0, "h")'
refused map_on_list 'struct mc_list x' 'MC_PARAM_MAP(struct conf, x, MC_PARAM_TINT, "{}", 0, 0, "h")'
# Designators after the help text, and the check, hold under -Wpedantic.
compiles optional_ok 'double x' 'MC_PARAM_FLOAT(struct conf, x, NULL, 0, 1, "h", .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FMIN_OPEN, .group = "g")'
try pedantic 'int x' 'MC_PARAM_INT(struct conf, x, "1", 0, 9, "h")' &&
	$cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$MCOMP_SRCDIR/include" \
		"$tmp/pedantic.c" > "$tmp/pedantic.log" 2>&1 && ok ||
	bad "a plain row warns under -Wpedantic: $(cat "$tmp/pedantic.log")"

echo "param_types: $pass passed, $fail failed"
[ "$fail" = 0 ]
