#!/bin/sh
# install.sh - installs into a temporary root, checks what is installed and
# what libmcomp and the passes export, then builds the out-of-tree example
# pass with pkg-config from the installed files alone and runs it in a pipeline.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-inst-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

make -C "$MCOMP_BUILDDIR" install DESTDIR="$tmp/root" > "$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; echo "install: 0 passed, 1 failed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$MCOMP_BUILDDIR/mcomp.pc")
libdir=$(sed -n 's/^libdir=//p' "$MCOMP_BUILDDIR/mcomp.pc" | sed "s|\${exec_prefix}|$prefix|")
root="$tmp/root"
for f in "$prefix/bin/mcomp" "$libdir/libmcomp.so" "$prefix/include/mcomp/mcomp.h" \
	"$prefix/include/mcomp/pass.h" "$libdir/mcomp/passes/train.so" \
	"$libdir/mcomp/passes/eval.so" "$libdir/pkgconfig/mcomp.pc" \
	"$prefix/share/mcomp/pipelines/quickstart.yaml" "$prefix/share/man/man1/mcomp.1"; do
	[ -e "$root$f" ] && ok || bad "not installed: $f"
done
# The guides and examples, where the man page says they are.
doc="$prefix/share/doc/mcomp"
grep -q 'PREFIX/share/doc/mcomp/writing\\-passes.md' "$MCOMP_SRCDIR/docs/mcomp.1" && ok ||
	bad "the man page no longer says where the guides are; update this test"
for f in "$doc/writing-passes.md" "$doc/pipelines.md" "$doc/examples/clip-pass/clip.c" \
	"$doc/examples/clip-pass/Makefile" "$doc/examples/clip-pass/pipeline.yaml"; do
	[ -s "$root$f" ] && ok || bad "not installed: $f"
done

# Only the public API leaves libmcomp; only the entry point leaves a pass.
# AddressSanitizer (make check-sanitize) adds an ODR indicator beside each
# exported variable, __odr_asan.NAME (or __odr_asan_gen_NAME): part of that API.
extra=$(nm -D --defined-only "$root$libdir/libmcomp.so" | awk '{print $3}' | grep -v '^mc_' |
	grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | grep -v -E '^__odr_asan(\.|_gen_)mc_')
[ -z "$extra" ] && ok || bad "libmcomp exports non-API symbols: $extra"
nm -D --defined-only "$root$libdir/libmcomp.so" | grep -q ' mc_pipeline_load$' && ok ||
	bad "libmcomp lacks mc_pipeline_load"
nm -D --defined-only "$root$libdir/libmcomp.so" | grep -q ' mc_yaml' && bad "internal mc_yaml* exported" || ok
syms=$(nm -D --defined-only "$root$libdir/mcomp/passes/train.so" | awk '{print $3}' |
	grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$')
[ "$syms" = "mc_pass_descriptor" ] && ok || bad "train.so exports: $syms"

export PKG_CONFIG_PATH="$root$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root"
[ "$(pkg-config --variable=abi mcomp)" = "$(sed -n 's/^#define MC_PASS_ABI \([0-9]*\).*/\1/p' "$MCOMP_SRCDIR/include/mcomp/pass.h")" ] &&
	ok || bad "mcomp.pc abi variable"
pkg-config --variable=passdir mcomp | grep -q 'mcomp/passes$' && ok || bad "mcomp.pc passdir"

# The example pass as installed, built against the installed headers and library only.
cp -r "$root$doc/examples/clip-pass" "$tmp/clip"
chmod -R u+w "$tmp/clip"
make -C "$tmp/clip" CFLAGS="-O2 -I/nonexistent" > "$tmp/build.log" 2>&1 && ok ||
	{ bad "example did not build"; cat "$tmp/build.log"; }
export LD_LIBRARY_PATH="$root$libdir"
export MCOMP_PASS_PATH="$tmp/clip:$root$libdir/mcomp/passes"
mcomp="$root$prefix/bin/mcomp"
"$mcomp" pass-info clip | grep -q 'sigmas' && ok || bad "installed mcomp cannot see clip"
sed "s|/usr/share/datasets/fashion-mnist|${MCOMP_DATA:-/usr/share/datasets/fashion-mnist}|" \
	"$tmp/clip/pipeline.yaml" > "$tmp/clip/p.yaml"
if "$mcomp" run "$tmp/clip/p.yaml" --quiet > "$tmp/run.log" 2>&1; then
	grep -q -E '^2 +clip' "$tmp/run.log" && ok || bad "no clip row: $(cat "$tmp/run.log")"
	grep -q '"clipped_fraction"' "$tmp/clip/out/clipped-report.json" && ok ||
		bad "report lacks the clip pass's figure"
else
	bad "pipeline with the example pass failed: $(cat "$tmp/run.log")"
fi

# The low-rank example, a pass that changes the graph, built and run the same way: each chosen
# linear layer becomes two (NAME_v [r, in] without bias, then NAME [out, r]), fine-tuned, then
# quantized. Without the data set only the build is checked.
cp -r "$MCOMP_SRCDIR/examples/lowrank-pass" "$tmp/lowrank"
chmod -R u+w "$tmp/lowrank"
make -B -C "$tmp/lowrank" CFLAGS="-O2 -I/nonexistent" > "$tmp/build.log" 2>&1 && ok ||
	{ bad "lowrank example did not build"; cat "$tmp/build.log"; }
export MCOMP_PASS_PATH="$tmp/lowrank:$MCOMP_PASS_PATH"
"$mcomp" pass-info lowrank | grep -q 'finetune_epochs' && ok ||
	bad "installed mcomp cannot see lowrank"
data=${MCOMP_DATA:-/usr/share/datasets/fashion-mnist}
sed "s|/usr/share/datasets/fashion-mnist|$data|" "$tmp/lowrank/pipeline.yaml" \
	> "$tmp/lowrank/p.yaml"
# The same without quantize (and fine-tuning, below), to see the f32 layers themselves.
sed '/quantize:/d' "$tmp/lowrank/p.yaml" > "$tmp/lowrank/f32.yaml"
lr_out="$tmp/lowrank/out/lowrank.safetensors"
# has WHAT RE...: the last inspect output matches every RE.
has() {
	what=$1
	shift
	for re; do
		grep -q -E "$re" "$tmp/inspect.log" && ok || bad "$what lacks /$re/"
	done
}
if ! ls "$data"/train-images-idx3-ubyte* > /dev/null 2>&1; then
	echo "SKIP: lowrank pipeline: no Fashion-MNIST in $data (set MCOMP_DATA)"
elif "$mcomp" run "$tmp/lowrank/p.yaml" --quiet > "$tmp/run.log" 2>&1; then
	grep -q -E '^2 +lowrank' "$tmp/run.log" && ok || bad "no lowrank row: $(cat "$tmp/run.log")"
	grep -q -E '^3 +quantize' "$tmp/run.log" && ok ||
		bad "no quantize row: $(cat "$tmp/run.log")"
	grep -q '"max_relative_error"' "$tmp/lowrank/out/lowrank-report.json" && ok ||
		bad "report lacks the lowrank pass's figures"
	"$mcomp" inspect "$lr_out" > "$tmp/inspect.log" 2>&1
	has "lowrank + quantize model" '^linear1_v +qlinear +out=32 .* flatten1$' \
		'^linear1 +qlinear +out=512 .* linear1_v$' '^linear2_v +qlinear +out=32 .* relu1$' \
		'^linear1_v\.weight +I8 +\[32, 784\]' '^linear1\.weight +I8 +\[512, 32\]' \
		'^linear2\.weight +I8 +\[256, 32\]'
	"$mcomp" run "$tmp/lowrank/f32.yaml" --quiet --set passes.lowrank.finetune_epochs=0 \
		> "$tmp/run.log" 2>&1 || bad "lowrank alone failed: $(cat "$tmp/run.log")"
	"$mcomp" inspect "$lr_out" > "$tmp/inspect.log" 2>&1
	has "lowrank model" '^linear1_v +linear +out=32 bias=false .* flatten1$' \
		'^linear1_v\.weight +F32 +\[32, 784\]' '^linear1\.weight +F32 +\[512, 32\]' \
		'^linear1\.bias +F32 +\[512\]'
	grep -q '^linear1_v\.bias' "$tmp/inspect.log" && bad "linear1_v has a bias" || ok
else
	bad "pipeline with the lowrank pass failed: $(cat "$tmp/run.log")"
fi

echo "install: $pass passed, $fail failed"
[ "$fail" = 0 ]
