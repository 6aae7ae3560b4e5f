#!/bin/sh
# outputs.sh - the rule for every file a pipeline writes (docs/security.md):
# never an input, never another output, a regular file or nothing; refused
# at validate (and before run) with file:line:col and exit 2, compared by
# device and inode rather than by spelling; inputs left as they were. And
# the temporary files a killed run left are removed by the next run.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-outputs-XXXXXX")
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
mkdir "$tmp/data" "$tmp/out"
head -c $((64 * 784)) /dev/urandom | idx "$tmp/data/d-images-idx3-ubyte" 003 64 28 28
i=0
while [ $i -lt 64 ]; do printf "\\$(printf %03o $((i % 10)))"; i=$((i + 1)); done |
	idx "$tmp/data/d-labels-idx1-ubyte" 001 64

cat > "$tmp/p.yaml" <<EOF
mcomp: 1
seed: 1
data:
  train: {idx: data/d}
  val: {idx: data/d, first: 32}
models:
  a: {build: {input: [1, 28, 28], layers: [flatten, {linear: 10}]}}
  b: {build: {input: [1, 28, 28], layers: [flatten, {linear: 16}, relu, {linear: 10}]}}
passes:
  - prune: {model: b, mode: sensitivity, eval_data: val, levels: [0.5], plot: out/sens.svg}
  - cascade: {stages: [a, b], output: out/c.safetensors, plot: out/c.svg}
output: {model: b, path: out/b.safetensors}
report: out/report.json
EOF
expect 0 'valid' "$mcomp" validate "$tmp/p.yaml"
sums() { cat "$tmp/p.yaml" "$tmp"/data/* | cksum; }
before=$(sums)

# refused PATTERN SET...: validate and run exit 2 with PATTERN; inputs unchanged.
refused() {
	pattern=$1
	shift
	for cmd in validate run; do
		expect 2 "$pattern" "$mcomp" $cmd "$tmp/p.yaml" "$@" --quiet
	done
	[ "$(sums)" = "$before" ] && ok || bad "inputs changed after $*"
	[ -z "$(ls -A "$tmp/out")" ] && ok || bad "$* wrote $(ls -A "$tmp/out")"
}
# A key in the file is named at its line and column: rewrite it with sed.
refused_in_file() { # refused_in_file PATTERN SED-ARGS...
	pattern=$1
	shift
	cp "$tmp/p.yaml" "$tmp/p.orig"
	sed -i "$@" "$tmp/p.yaml"
	before=$(sums)
	refused "$pattern"
	cp "$tmp/p.orig" "$tmp/p.yaml"
	before=$(sums)
}

# Outputs that name inputs: the pipeline, a data file, through other spellings.
refused_in_file "p.yaml:11:31: pass 'cascade', output '.*p.yaml' would overwrite an input \(the pipeline file itself" \
	's|output: out/c.safetensors|output: p.yaml|'
refused_in_file "p.yaml:10:73: pass 'prune', plot '.*' would overwrite an input \(a file of data split 'train'" \
	's|plot: out/sens.svg|plot: data/d-images-idx3-ubyte|'
refused_in_file "p.yaml:11:31: pass 'cascade', output .* would overwrite an input \(the pipeline file" \
	's|output: out/c.safetensors|output: ./out/../p.yaml|'
refused_in_file "p.yaml:11:31: .* would overwrite an input \(a file of data split 'train'" \
	's|output: out/c.safetensors|output: out/../data/./d-labels-idx1-ubyte|'
ln "$tmp/data/d-labels-idx1-ubyte" "$tmp/hard"
refused_in_file "p.yaml:12:26: output path '.*hard' would overwrite an input \(a file of data split" \
	's|path: out/b.safetensors|path: hard|'
refused_in_file "p.yaml:13:9: report .* would overwrite an input \(the shared object of pass 'prune'" \
	"s|report: out/report.json|report: ${MCOMP_PASS_PATH%%:*}/prune.so|"

# Outputs that are not regular files: refused, saying what they are.
refused "output path '/dev/null' is a character device; mcomp writes only regular files" --set output.path=/dev/null
mkfifo "$tmp/fifo"
refused "report '.*fifo' is a FIFO \(named pipe\)" --set report=fifo
[ -p "$tmp/fifo" ] && ok || bad "the FIFO was replaced"
echo keep > "$tmp/target"
ln -s target "$tmp/link"
refused "pass 'prune', plot '.*link' is a symbolic link \(to 'target'\); mcomp never writes through a link" \
	--set passes.0.prune.plot=link
[ -L "$tmp/link" ] && [ "$(cat "$tmp/target")" = keep ] && ok || bad "the link or its target changed"
ln -s /nonexistent/x "$tmp/dangling"
refused "output path '.*dangling' is a symbolic link" --set output.path=dangling
mkdir "$tmp/folder"
refused "pass 'cascade', plot '.*folder' is a folder; name the file to write" \
	--set passes.1.cascade.plot=folder
refused "report '.*/out/' names a folder" --set report=out/
if command -v python3 > /dev/null 2>&1; then
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$tmp/sock"
	refused "output path '.*sock' is a socket" --set output.path=sock
fi

# Two outputs, one file: the same spelling, other spellings, a hard link, a
# folder not there yet.
refused_in_file "p.yaml:13:9: report '.*/out/b.safetensors' is the same file as output path '.*/out/b.safetensors' \(.*p.yaml:12:26\)" \
	's|report: out/report.json|report: out/b.safetensors|'
refused_in_file "p.yaml:11:58: pass 'cascade', plot '.*' is the same file as pass 'prune', plot '.*out/sens.svg' \(.*p.yaml:10:73\)" \
	's|plot: out/c.svg|plot: ./out/x/../sens.svg|'
refused_in_file "p.yaml:12:26: output path .* is the same file as pass 'cascade', output" \
	's|path: out/b.safetensors|path: new/../out/./c.safetensors|'
refused_in_file "p.yaml:13:9: report '.*/n/e/../w' is the same file as output path '.*/n/w' \(.*p.yaml:12:26\)" \
	-e 's|path: out/b.safetensors|path: n/w|' -e 's|report: out/report.json|report: n/e/../w|'
echo old > "$tmp/old.st"
ln "$tmp/old.st" "$tmp/alias"
refused "report '.*/alias' is the same file as output path '.*/old.st' \(--set output.path\)" \
	--set output.path=old.st --set report=alias
[ "$(cat "$tmp/old.st")" = old ] && ok || bad "old.st changed"
ln -s out "$tmp/outlink"
refused "report '.*/outlink/b.safetensors' is the same file as output path '.*/out/b.safetensors'" \
	--set report=outlink/b.safetensors

# The run: every output written, each listed with its digest in the report.
expect 0 'wrote .*report.json' "$mcomp" run "$tmp/p.yaml"
for f in sens.svg c.svg c.safetensors b.safetensors; do
	[ -f "$tmp/out/$f" ] || { bad "no out/$f"; continue; }
	grep -q "\"sha256\": \"$(sha256sum "$tmp/out/$f" | cut -d' ' -f1)\"" "$tmp/out/report.json" &&
		ok || bad "the report lacks the digest of out/$f"
done
[ "$(sums)" = "$before" ] && ok || bad "the run changed an input"

# Temporary files of killed runs beside an output: those matching the
# writer's pattern, this user's, older than the run and not locked are
# removed (with a line saying so); anything else stays.
stale="$tmp/out/.b.safetensors.Ab12Cd"
echo torn > "$stale"
echo torn > "$tmp/out/.report.json.zzzzzz"
touch -d '1 hour ago' "$stale" "$tmp/out/.report.json.zzzzzz"
echo mine > "$tmp/out/.b.safetensors.tooLong7"
echo mine > "$tmp/out/.b.safetensors.ab-12c"
echo mine > "$tmp/out/.other.svg.Ab12Cd"
touch -d '1 hour ago' "$tmp/out/.b.safetensors.tooLong7" "$tmp/out/.b.safetensors.ab-12c" \
	"$tmp/out/.other.svg.Ab12Cd"
# A live writer's: this shell holds its lock while mcomp runs.
exec 9> "$tmp/out/.c.svg.LoCk3d"
flock -x 9 || bad "cannot lock"
touch -d '1 hour ago' "$tmp/out/.c.svg.LoCk3d"
expect 0 "removed .*out/.b.safetensors.Ab12Cd, a temporary file that an interrupted run left" \
	"$mcomp" run "$tmp/p.yaml"
printf '%s\n' "$out" | grep -q "removed .*report.json.zzzzzz" && ok || bad "the report's stale file stayed: $out"
[ ! -e "$stale" ] && [ ! -e "$tmp/out/.report.json.zzzzzz" ] && ok || bad "stale files stayed"
for f in .b.safetensors.tooLong7 .b.safetensors.ab-12c .other.svg.Ab12Cd .c.svg.LoCk3d; do
	[ -e "$tmp/out/$f" ] && ok || bad "$f (not a stale temporary file) was removed"
done
exec 9>&-
finish
