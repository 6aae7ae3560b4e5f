#!/bin/sh
# zstd.sh - zstd-coded model and cascade files from the command line
# (docs/pipelines.md, "output"): a pipeline output, a pass output and an
# import -o ending in .zst are one zstd frame, the same bytes for any thread
# count, whose content is the plain file; the report gives bytes (on disk)
# and bytes_raw; inspect, eval, predict, export and load: read them; a
# truncated, corrupt or trailing-data frame is refused with exit 1 and a
# message naming the file; .zst where no model is written is refused with
# exit 2; an interrupted run leaves a whole file or none, and no temporary.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-zstd-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"

# A tiny IDX data set: 64 images of 28x28 and their labels (0..9).
idx() { # idx FILE MAGIC-BYTE DIMS... then the payload on stdin
	f=$1 m=$2
	shift 2
	{
		printf '\000\000\010\'"$m"
		for d in "$@"; do
			printf "\\$(printf %03o $((d >> 24 & 255)))\\$(printf %03o $((d >> 16 & 255)))"
			printf "\\$(printf %03o $((d >> 8 & 255)))\\$(printf %03o $((d & 255)))"
		done
		cat
	} > "$f"
}
mkdir "$tmp/data"
head -c $((64 * 784)) /dev/urandom | idx "$tmp/data/d-images-idx3-ubyte" 003 64 28 28
i=0
while [ $i -lt 64 ]; do printf "\\$(printf %03o $((i % 10)))"; i=$((i + 1)); done |
	idx "$tmp/data/d-labels-idx1-ubyte" 001 64

# Two models, a cascade of them (a pass output), the bigger one the output.
cat > "$tmp/p.yaml" <<EOF
mcomp: 1
seed: 1
data:
  train: {idx: data/d}
  val: {idx: data/d, first: 32}
  test: {idx: data/d, first: 32}
models:
  a: {build: {input: [1, 28, 28], layers: [flatten, {linear: 10}]}}
  b: {build: {input: [1, 28, 28], layers: [flatten, {linear: 32}, relu, {linear: 10}]}}
passes:
  - train: {model: b, epochs: 2, batch_size: 16}
  - prune: {model: b, sparsity: 0.8}
  - cascade: {stages: [a, b], output: out/c.safetensors.zst}
output: {model: b, path: out/b.safetensors.zst}
report: out/report.json
EOF
magic() { head -c 4 "$1" | od -An -tx1 | tr -d ' \n'; }
size() { wc -c < "$1" | tr -d ' '; }

expect 0 'wrote .*out/b.safetensors.zst' env OMP_NUM_THREADS=1 "$mcomp" run "$tmp/p.yaml"
for f in b c; do
	[ "$(magic "$tmp/out/$f.safetensors.zst")" = 28b52ffd ] && ok ||
		bad "out/$f.safetensors.zst is no zstd frame: $(magic "$tmp/out/$f.safetensors.zst")"
done
mv "$tmp/out" "$tmp/out1"

# The same bytes on two threads; the content is the plain file.
expect 0 'wrote .*out/b.safetensors.zst' env OMP_NUM_THREADS=2 "$mcomp" run "$tmp/p.yaml"
for f in b c; do
	cmp -s "$tmp/out1/$f.safetensors.zst" "$tmp/out/$f.safetensors.zst" && ok ||
		bad "out/$f.safetensors.zst differs between 1 and 2 threads"
done
expect 0 'wrote .*out/plain/b.safetensors' "$mcomp" run "$tmp/p.yaml" --quiet \
	--set output.path=out/plain/b.safetensors --set passes.2.cascade.output=out/plain/c.safetensors \
	--set report=out/plain/report.json
if command -v zstd > /dev/null 2>&1; then
	for f in b c; do
		zstd -q -d -c "$tmp/out/$f.safetensors.zst" | cmp -s - "$tmp/out/plain/$f.safetensors" &&
			ok || bad "zstd -d of out/$f.safetensors.zst is not the plain file"
	done
	zstd -lv "$tmp/out/b.safetensors.zst" 2> /dev/null | grep -q "Decompressed Size:.*($(size "$tmp/out/plain/b.safetensors") B)" &&
		ok || bad "the frame does not declare its content size: $(zstd -lv "$tmp/out/b.safetensors.zst" 2>&1)"
	zstd -lv "$tmp/out/b.safetensors.zst" 2> /dev/null | grep -q "Check: XXH64" && ok ||
		bad "the frame has no checksum"
fi

# The report: bytes is the file on disk, bytes_raw the plain file; the
# manifest's digest is of the coded file; the table has both columns.
last() { # KEY FILE: KEY of the last step that measured a model (the steps' keys, not metrics)
	grep "^      \"$1\": " "$2" | sed 's/.*: \([0-9]*\),*/\1/' | grep -v '^0$' | tail -n 1
}
[ "$(last bytes "$tmp/out/report.json")" = "$(size "$tmp/out/b.safetensors.zst")" ] && ok ||
	bad "report bytes $(last bytes "$tmp/out/report.json") is not the .zst file's $(size "$tmp/out/b.safetensors.zst")"
[ "$(last bytes_raw "$tmp/out/report.json")" = "$(size "$tmp/out/plain/b.safetensors")" ] && ok ||
	bad "report bytes_raw $(last bytes_raw "$tmp/out/report.json") is not the plain file's $(size "$tmp/out/plain/b.safetensors")"
[ "$(last bytes "$tmp/out/plain/report.json")" = "$(last bytes_raw "$tmp/out/plain/report.json")" ] && ok ||
	bad "a plain output's report has bytes != bytes_raw"
grep -q "$(sha256sum "$tmp/out/b.safetensors.zst" | cut -d' ' -f1)" "$tmp/out/report.json" && ok ||
	bad "the report's digest is not of the .zst on disk"
expect 0 'bytes +raw bytes' "$mcomp" run "$tmp/p.yaml" --set output.path=out/t.safetensors.zst \
	--set passes.2.cascade.output=out/t-c.safetensors --set report=out/t.json
expect 0 'step pass' "$mcomp" run "$tmp/p.yaml" --quiet --set output.path=out/u.safetensors \
	--set passes.2.cascade.output=out/u-c.safetensors --set report=out/u.json
"$mcomp" run "$tmp/p.yaml" --set output.path=out/u.safetensors --set passes.2.cascade.output=out/u-c.safetensors \
	--set report=out/u.json 2>&1 | grep -q 'raw bytes' && bad "a plain output's table has a raw bytes column" || ok

# zstd_level: another level, other bytes, the same content; checked at validate.
expect 0 'wrote' "$mcomp" run "$tmp/p.yaml" --quiet --set output.zstd_level=19 \
	--set output.path=out/l19.safetensors.zst --set passes.2.cascade.output=out/l19-c.safetensors \
	--set report=out/l19.json
[ "$(last bytes "$tmp/out/l19.json")" = "$(size "$tmp/out/l19.safetensors.zst")" ] && ok ||
	bad "zstd_level 19: report bytes is not the file's"
[ "$(last bytes_raw "$tmp/out/l19.json")" = "$(size "$tmp/out/plain/b.safetensors")" ] && ok ||
	bad "zstd_level 19: bytes_raw changed"
expect 2 'output zstd_level: 23 is out of range \[1, 22\]' "$mcomp" validate "$tmp/p.yaml" --set output.zstd_level=23
expect 2 "zstd_level says how a .zst file is coded; '.*b.safetensors' does not end in .zst" \
	"$mcomp" validate "$tmp/p.yaml" --set output.path=out/b.safetensors --set output.zstd_level=3
expect 2 "ONNX files are written plain" "$mcomp" validate "$tmp/p.yaml" --set output.path=out/b.onnx.zst

# Every reader: inspect, eval, predict, export, load:, on models and cascades.
z=$tmp/out/b.safetensors.zst
expect 0 "bytes: +$(size "$z") \(zstd frame; $(size "$tmp/out/plain/b.safetensors") decoded\)" "$mcomp" inspect "$z"
expect 0 'cascade' "$mcomp" inspect "$tmp/out/c.safetensors.zst"
for f in b c; do
	"$mcomp" eval "$tmp/out/$f.safetensors.zst" --data "$tmp/data/d" > "$tmp/e1" 2>&1 || bad "eval $f.zst: $(cat "$tmp/e1")"
	"$mcomp" eval "$tmp/out/plain/$f.safetensors" --data "$tmp/data/d" > "$tmp/e2" 2>&1 || bad "eval $f: $(cat "$tmp/e2")"
	[ "$(grep accuracy "$tmp/e1")" = "$(grep accuracy "$tmp/e2")" ] && ok ||
		bad "eval of $f.zst: $(cat "$tmp/e1") against $(cat "$tmp/e2")"
done
npy_header() { # DESCR SHAPE: the 128 bytes of magic and header
	printf '\223NUMPY\001\000\166\000'
	printf "%-117s\n" "{'descr': '$1', 'fortran_order': False, 'shape': $2, }"
}
{ npy_header '|u1' '(3, 1, 28, 28)'; head -c $((3 * 784)) "$tmp/data/d-images-idx3-ubyte" | tail -c $((3 * 784)); } > "$tmp/x.npy"
for f in b c; do
	expect 0 'wrote' "$mcomp" predict "$tmp/out/$f.safetensors.zst" --input "$tmp/x.npy" -o "$tmp/yz-$f.npy"
	expect 0 'wrote' "$mcomp" predict "$tmp/out/plain/$f.safetensors" --input "$tmp/x.npy" -o "$tmp/yp-$f.npy"
	cmp -s "$tmp/yz-$f.npy" "$tmp/yp-$f.npy" && ok || bad "predict of $f.zst differs from the plain file's"
done
expect 0 'ONNX opset' "$mcomp" export "$z" -o "$tmp/b.onnx"
expect 0 '-> .*imported.safetensors.zst' "$mcomp" import "$tmp/b.onnx" -o "$tmp/imported.safetensors.zst"
[ "$(magic "$tmp/imported.safetensors.zst")" = 28b52ffd ] && ok || bad "import -o .zst wrote no zstd frame"
expect 0 'accuracy' "$mcomp" eval "$tmp/imported.safetensors.zst" --data "$tmp/data/d"
cat > "$tmp/load.yaml" <<EOF
mcomp: 1
seed: 2
data:
  train: {idx: data/d}
  test: {idx: data/d}
models:
  t: {load: out/b.safetensors.zst}
  t2: {load: out/l19.safetensors.zst}
  s: {build: {input: [1, 28, 28], layers: [flatten, {linear: 10}]}}
passes:
  - distill: {student: s, teacher: t, epochs: 1, batch_size: 32}
  - ensemble-distill: {student: s, teachers: [t, t2], epochs: 1, batch_size: 32}
  - eval: {model: t}
report: out/load.json
EOF
expect 0 'eval: t on test' "$mcomp" run "$tmp/load.yaml"
grep -q "\"path\": \".*out/b.safetensors.zst\"" "$tmp/out/load.json" && ok || bad "load: .zst is not among the inputs"
expect 2 "predict: -o '.*y.npy.zst': NumPy files are written plain" "$mcomp" predict "$z" --input "$tmp/x.npy" -o "$tmp/y.npy.zst"
expect 2 "export: -o '.*b.onnx.zst': ONNX files are written plain" "$mcomp" export "$z" -o "$tmp/b.onnx.zst"
[ ! -e "$tmp/y.npy.zst" ] && [ ! -e "$tmp/b.onnx.zst" ] && ok || bad "a refused -o .zst wrote a file"

# Damaged frames: exit 1, the file named, what is wrong and the fix; nothing crashes.
n=$(size "$z")
head -c $((n - 1)) "$z" > "$tmp/cut.zst"
head -c $((n / 2)) "$z" > "$tmp/half.safetensors"
{ cat "$z"; printf 'appended'; } > "$tmp/trail.zst"
{ head -c $((n / 2)) "$z"; printf '\377'; tail -c $((n - n / 2 - 1)) "$z"; } > "$tmp/bad.zst"
for f in cut.zst half.safetensors; do
	for cmd in inspect "eval --data $tmp/data/d" "predict --input $tmp/x.npy -o $tmp/y.npy" "export -o $tmp/y.onnx"; do
		# shellcheck disable=SC2086
		expect 1 "$f: zstd frame is truncated \(the file ends after [0-9]+ bytes, inside the frame\): .*copy it again" \
			"$mcomp" ${cmd%% *} "$tmp/$f" $(echo "$cmd" | cut -s -d' ' -f2-)
	done
done
expect 1 "trail.zst: 8 bytes of trailing data after the zstd frame \(which ends at byte $n\)" "$mcomp" inspect "$tmp/trail.zst"
expect 1 "bad.zst: zstd frame is corrupt \(.*\)" "$mcomp" eval "$tmp/bad.zst" --data "$tmp/data/d"
# load: reads models while the pipeline is checked: exit 2, as for any bad model file.
cp "$tmp/cut.zst" "$tmp/out/cut.zst"
expect 2 "model 't': zstd frame is truncated" "$mcomp" run "$tmp/load.yaml" --set models.t.load=out/cut.zst
[ ! -e "$tmp/y.npy" ] && [ ! -e "$tmp/y.onnx" ] && ok || bad "a refused model wrote an output"
# A frame whose content is 1 GiB of zeros (32 KiB on disk): a bomb, refused
# before the content is allocated; below the ratio, the memory limit.
if command -v zstd > /dev/null 2>&1; then
	head -c 1073741824 /dev/zero | zstd -q -1 --stream-size=1073741824 -c > "$tmp/bomb.zst"
	expect 1 "bomb.zst: zstd frame of [0-9]+ bytes declares 1073741824 bytes of content, more than 64 times its size: it looks like a zstd bomb; if the model is real, decode it with .zstd -d." \
		"$mcomp" inspect "$tmp/bomb.zst"
	head -c 1073741824 /dev/zero | zstd -q -1 -c > "$tmp/bomb2.zst"
	expect 1 "bomb2.zst: zstd frame of [0-9]+ bytes decodes to more than [0-9]+ bytes of content, more than 64 times its size" \
		"$mcomp" eval "$tmp/bomb2.zst" --data "$tmp/data/d"
	head -c $((80 << 20)) /dev/urandom > "$tmp/big"
	zstd -q -1 -c < "$tmp/big" > "$tmp/big2.zst"
	zstd -q -1 -c --stream-size=$((80 << 20)) < "$tmp/big" > "$tmp/big.zst"
	rm -f "$tmp/big"
	expect 1 "big2.zst: decoding its zstd frame \(no size declared; .*\) needs .* more than the limit of 64.0 MiB" \
		"$mcomp" --max-memory 64M inspect "$tmp/big2.zst"
	expect 1 "big.zst: decoding its zstd frame \(83886080 bytes\) needs 160.0 MiB of memory, more than the limit of 64.0 MiB" \
		"$mcomp" --max-memory 64M inspect "$tmp/big.zst"
fi

# Interrupted runs: a whole .zst or none, and no temporary file left.
env --default-signal=INT true 2> /dev/null || { finish; }
cat > "$tmp/i.yaml" <<EOF
mcomp: 1
seed: 3
data:
  train: {idx: data/d}
models:
  m: {build: {input: [1, 28, 28], layers: [flatten, {linear: 256}, relu, {linear: 10}]}}
passes:
  - train: {model: m, epochs: 40, batch_size: 8}
output: {model: m, path: out/i/m.safetensors.zst, zstd_level: 19}
EOF
for d in 0.2 0.6 1.2 2.5; do
	rm -rf "$tmp/out/i"
	env --default-signal=INT,TERM "$mcomp" run "$tmp/i.yaml" > "$tmp/log" 2>&1 &
	pid=$!
	sleep "$d"
	kill -s TERM $pid 2> /dev/null
	wait $pid
	rc=$?
	if [ -e "$tmp/out/i/m.safetensors.zst" ]; then
		"$mcomp" inspect "$tmp/out/i/m.safetensors.zst" > /dev/null 2>&1 && ok ||
			bad "SIGTERM after ${d}s (exit $rc): out/i/m.safetensors.zst does not load"
	else
		[ $rc = 143 ] && ok || bad "SIGTERM after ${d}s: no file and exit $rc: $(cat "$tmp/log")"
	fi
	left=$(ls -A "$tmp/out/i" 2> /dev/null | grep '^\.' || true)
	[ -z "$left" ] && ok || bad "SIGTERM after ${d}s left $left"
done

# A signal while the coded model is being written (its temporary file held
# at fsync through strace, where ptrace is allowed): SIGTERM leaves neither
# the file nor the temporary; SIGKILL leaves the temporary, which the next
# run removes before writing the whole file.
if strace -f -o /dev/null true > /dev/null 2>&1; then
	# at_fsync SIG: runs i.yaml (1 epoch), sends SIG while the first fsync waits.
	at_fsync() {
		rm -rf "$tmp/out/i"
		: > "$tmp/st"
		strace -f --seccomp-bpf -o "$tmp/st" -e trace=fsync -e inject=fsync:delay_exit=3000000:when=1 \
			"$mcomp" run "$tmp/i.yaml" --quiet --set passes.0.train.epochs=1 > "$tmp/log" 2>&1 &
		spid=$!
		n=0
		while ! grep -q 'DELAYED' "$tmp/st" && [ $n -lt 600 ] && kill -0 $spid 2> /dev/null; do
			sleep 0.05
			n=$((n + 1))
		done
		mpid=$(grep 'DELAYED' "$tmp/st" | head -n 1 | cut -d' ' -f1)
		[ -n "$mpid" ] && kill -s "$1" "$mpid"
		wait $spid 2> /dev/null
		grep -q 'fsync.*DELAYED' "$tmp/st" && ok || bad "SIG$1: no fsync was delayed: $(cat "$tmp/log")"
	}
	at_fsync TERM
	[ ! -e "$tmp/out/i/m.safetensors.zst" ] && ok || bad "SIGTERM while writing: the model was put in place"
	[ -z "$(ls -A "$tmp/out/i" 2> /dev/null)" ] && ok || bad "SIGTERM while writing left $(ls -A "$tmp/out/i")"
	grep -q 'interrupted by SIGTERM' "$tmp/log" && ok || bad "SIGTERM while writing: $(cat "$tmp/log")"
	at_fsync KILL
	[ ! -e "$tmp/out/i/m.safetensors.zst" ] && ok || bad "SIGKILL while writing: the model was put in place"
	left=$(ls -A "$tmp/out/i" 2> /dev/null | grep '^\.m\.safetensors\.zst\.' || true)
	[ -n "$left" ] && ok || bad "SIGKILL while writing left no temporary file: $(ls -A "$tmp/out/i")"
	expect 0 "removed .*$left, a temporary file that an interrupted run left" \
		"$mcomp" run "$tmp/i.yaml" --set passes.0.train.epochs=1
	[ "$(ls -A "$tmp/out/i")" = m.safetensors.zst ] && ok || bad "after the next run: $(ls -A "$tmp/out/i")"
	"$mcomp" inspect "$tmp/out/i/m.safetensors.zst" > /dev/null 2>&1 && ok || bad "the next run's model does not load"
fi
finish
