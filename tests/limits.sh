#!/bin/sh
# limits.sh - hostile inputs meet bounded memory and time (docs/security.md, "Limits on hostile input"):
# every file is made here, at test time, a few hundred bytes to a megabyte
# each, and must be refused (or served) with a message naming it, exit 1 or
# 2, peak RSS under 256 MB and a wall time far under what it used to take.
#
# Time bounds are generous for a loaded 2-core machine: each check states its
# target (what it takes on an idle machine), and fails only at several times
# that. Peak RSS comes from GNU time (/usr/bin/time, Debian package "time");
# without it (or with LIMITS_SAMPLE_RSS=1), from the peak (VmHWM) sampled in
# /proc every 10 ms while the command runs.
set -u
: "${MCOMP_BUILDDIR:?run through make check}" "${MCOMP_SRCDIR:?run through make check}"
mcomp="$MCOMP_BUILDDIR/mcomp"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-limits-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$MCOMP_SRCDIR/tests/expect.sh"
MAX_KB=262144

# run_measured CMD...: runs CMD, output in $tmp/out, exit status in $got,
# seconds in $secs and peak RSS (KB) in $kb.
run_measured() {
	if [ -z "${LIMITS_SAMPLE_RSS:-}" ] && /usr/bin/time -f "%e %M" true > /dev/null 2>&1; then
		/usr/bin/time -o "$tmp/time" -f '%e %M' "$@" > "$tmp/out" 2>&1
		got=$?
		# after "Command exited with non-zero status N" when it did
		read -r secs kb << EOF
$(tail -n 1 "$tmp/time")
EOF
		return
	fi
	t0=$(date +%s.%N)
	"$@" > "$tmp/out" 2>&1 &
	pid=$! kb=0
	while kill -0 "$pid" 2> /dev/null; do
		k=$(sed -n "s/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$pid/status" 2> /dev/null)
		[ -n "$k" ] && [ "$k" -gt "$kb" ] && kb=$k
		sleep 0.01
	done
	wait "$pid"
	got=$?
	secs=$(echo "$(date +%s.%N) - $t0" | bc)
}

# bounded CODE PATTERN SECONDS CMD...: CMD exits CODE, prints PATTERN, takes
# less than SECONDS and peaks under MAX_KB of memory.
bounded() {
	code=$1 pattern=$2 max_s=$3
	shift 3
	run_measured "$@"
	if [ "$got" != "$code" ]; then
		bad "$* exited $got, wanted $code: $(head -c 600 "$tmp/out")"
	elif ! grep -q -E -- "$pattern" "$tmp/out"; then
		bad "$* printed no /$pattern/: $(head -c 600 "$tmp/out")"
	elif [ "$(echo "$secs >= $max_s" | bc)" = 1 ]; then
		bad "$* took $secs s, more than $max_s s"
	elif [ "$kb" -ge "$MAX_KB" ]; then
		bad "$* peaked at $kb KB, more than $MAX_KB KB"
	else
		ok
		# the figures, for the log
		echo "ok: $secs s, $kb KB: $(echo "$*" | sed "s|$tmp/||g" | cut -c1-100)"
	fi
}
command -v bc > /dev/null || skip "no bc to compare times (apt-get install bc)"

# le32 N / be32 N: four bytes of N.
le32() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8 & 255)) \
		$(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}
be32() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
		$(($1 >> 8 & 255)) $(($1 & 255)))"
}

# st_file OUT HEADER: a safetensors file: the header (padded to 8 bytes),
# then the data section from stdin.
st_file() {
	h=$2
	while [ $((${#h} % 8)) != 0 ]; do h="$h "; done
	{ le32 ${#h}; le32 0; printf '%s' "$h"; cat; } > "$1"
}

# ---------------------------------------------------------------- model files
# A 250M-input layer whose weights are "stored" as an empty CSR: 588 bytes that
# declared 1 GB, which inspect, validate and eval zero-filled (2 s, 1 GB RSS).
big=250000000
arch="{\\\"format\\\":1,\\\"input\\\":[$big],\\\"nodes\\\":[{\\\"name\\\":\\\"fc\\\",\\\"op\\\":\\\"linear\\\",\\\"inputs\\\":[\\\"input\\\"],\\\"attrs\\\":{\\\"out\\\":1}}]}"
sparse="{\\\"fc.weight\\\":{\\\"format\\\":\\\"csr\\\",\\\"shape\\\":[1,$big],\\\"nnz\\\":0}}"
header="{\"__metadata__\":{\"format\":\"mcomp\",\"mcomp.version\":\"0.1.0\",\"mcomp.arch\":\"$arch\",\"mcomp.sparse\":\"$sparse\"},\"fc.weight.__indptr\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},\"fc.weight.__indices\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[8,8]},\"fc.weight.__values\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}"
head -c 12 /dev/zero | st_file "$tmp/empty.safetensors" "$header"
# The same with a bias of 1.0: it stores a value, so only the limit stops it.
{ head -c 8 /dev/zero; le32 1065353216; } | st_file "$tmp/one.safetensors" "$header"
mkdir "$tmp/d"
{ printf '\0\0\10\3'; be32 2; be32 2; be32 2; head -c 8 /dev/zero; } > "$tmp/d/t10k-images-idx3-ubyte"
{ printf '\0\0\10\1'; be32 2; head -c 2 /dev/zero; } > "$tmp/d/t10k-labels-idx1-ubyte"

empty="empty.safetensors: layer 'fc' \(linear\) needs 250000001 values \(953.7 MiB\) but the file stores none"
# Target: 0.01 s each.
bounded 1 "$empty" 2 "$mcomp" inspect "$tmp/empty.safetensors"
bounded 1 "$empty" 2 "$mcomp" eval "$tmp/empty.safetensors" --data "$tmp/d"
bounded 1 "$empty" 2 "$mcomp" export "$tmp/empty.safetensors" -o "$tmp/x.onnx"
cat > "$tmp/load.yaml" << EOF
mcomp: 1
models:
  m: {load: empty.safetensors}
passes: []
EOF
bounded 2 "load.yaml:3:13: model 'm': layer 'fc' \(linear\) needs 250000001 values" 2 "$mcomp" validate "$tmp/load.yaml"
limit="one.safetensors: a model of 250000001 parameters needs 953.7 MiB of memory, more than the limit of 256.0 MiB"
bounded 1 "$limit \(--max-memory\); .*raise the limit" 2 "$mcomp" inspect "$tmp/one.safetensors" --max-memory 256M
bounded 1 "$limit \(MCOMP_MAX_MEMORY\)" 2 env MCOMP_MAX_MEMORY=256M "$mcomp" inspect "$tmp/one.safetensors"
bounded 1 "$limit \(--max-memory\)" 2 env MCOMP_MAX_MEMORY=unlimited "$mcomp" --max-memory=256M inspect "$tmp/one.safetensors"
expect 2 "--max-memory '12Q': give a size such as 512M" "$mcomp" inspect "$tmp/one.safetensors" --max-memory 12Q
expect 2 "MCOMP_MAX_MEMORY '0': give a size" env MCOMP_MAX_MEMORY=0 "$mcomp" inspect "$tmp/one.safetensors"
expect 2 "--max-memory needs a SIZE" "$mcomp" inspect "$tmp/one.safetensors" --max-memory
# Allowed, its 1 GB is zeroed lazily: only what is written costs memory.
# Target: 0.7 s (counting the nonzeros reads 1 GB of zero pages). Some
# kernels (seen: 6.18 in a Firecracker VM) back a read of an untouched
# anonymous page with a page of its own rather than the shared zero page:
# there the read of 1 GB costs 1 GB, whatever mcomp does, and the bound is
# the 1 GB plus the same 256 MB (probed: 64 MB mapped and read by python3).
reads_cost=0
if command -v python3 > /dev/null 2>&1 &&
	python3 -c 'import mmap, resource, sys
n = 64 << 20
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = mmap.mmap(-1, n)
s = sum(m[i] for i in range(0, n, 4096))
sys.exit(0 if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0 > 32768 else 1)'; then
	reads_cost=1
	echo "# this kernel gives reads of untouched anonymous memory pages of their own"
fi
[ $reads_cost = 1 ] && MAX_KB=$((MAX_KB + 1000000))
bounded 0 'parameters: 250000001 \(1 nonzero\)' 10 "$mcomp" inspect "$tmp/one.safetensors"
[ $reads_cost = 1 ] && MAX_KB=$((MAX_KB - 1000000))

# ---------------------------------------------------------------- YAML
# {linear: 1000000} took 11 s and 3 GB to validate: now sized from shapes.
cat > "$tmp/lin.yaml" << EOF
mcomp: 1
models:
  m:
    build: {input: [1, 28, 28], layers: [flatten, {linear: 1000000}]}
passes: []
EOF
bounded 0 'lin.yaml: valid' 5 "$mcomp" validate "$tmp/lin.yaml" # target 0.03 s
bounded 2 "lin.yaml:3:3: model 'm' \(785000000 parameters\) needs 2.9 GiB of memory, more than the limit of 1.0 GiB" \
	5 "$mcomp" validate "$tmp/lin.yaml" --max-memory 1G
# 100k and 2 MB of '[' took 24 s and about an hour: refused at level 65.
for n in 100000 2097152; do
	{ printf 'mcomp: 1\nmodels: '; head -c $n /dev/zero | tr '\0' '['; } > "$tmp/deep.yaml"
	bounded 2 'deep.yaml:2:72: nesting deeper than 64 levels' 1 "$mcomp" validate "$tmp/deep.yaml" # target 0.02 s
done
deep=$(head -c 100000 /dev/zero | tr '\0' '[')
bounded 2 'nesting deeper than 64 levels' 1 "$mcomp" validate "$tmp/lin.yaml" --set "seed=$deep"
# Large but legal shapes, each validated (or refused) in well under 2 s:
# a 15 MB string, 99,000 list items, 49,000 keys, 8,000 layers, 4,000 --set
# overrides of new keys (which took 78 s and 9.6 GB as 20,000).
head='mcomp: 1
models:
  m:
    build: {input: [4], layers: [{linear: 2}]}
passes: []'
{ echo "$head"; printf 'x: "'; head -c 15000000 /dev/zero | tr '\0' x; echo '"'; } > "$tmp/str.yaml"
bounded 2 "str.yaml:6:1: unknown key 'x'" 5 "$mcomp" validate "$tmp/str.yaml" # target 0.4 s
{ echo "$head"; printf 'x: [0'; i=0; while [ $i -lt 99 ]; do printf '%01000d' 0 | sed 's/0/, 1/g'; i=$((i + 1)); done; echo ']'; } > "$tmp/list.yaml"
bounded 2 "list.yaml:6:1: unknown key 'x'" 5 "$mcomp" validate "$tmp/list.yaml" # target 0.03 s
{ echo "$head"; echo 'x:'; seq 49000 | sed 's/.*/  k&: 1/'; } > "$tmp/keys.yaml"
bounded 2 "keys.yaml:6:1: unknown key 'x'" 5 "$mcomp" validate "$tmp/keys.yaml" # target 0.05 s
{ printf 'mcomp: 1\nmodels:\n  m:\n    build: {input: [4], layers: ['; seq 8000 | sed 's/.*/relu, /' | tr -d '\n'; printf '{linear: 2}]}\npasses: []\n'; } > "$tmp/layers.yaml"
bounded 0 "layers.yaml: valid" 5 "$mcomp" validate "$tmp/layers.yaml" # target 0.3 s
{ printf 'mcomp: 1\nmodels:\n  m:\n    build: {input: [4], layers: ['; seq 99000 | sed 's/.*/relu, /' | tr -d '\n'; printf '{linear: 2}]}\npasses: []\n'; } > "$tmp/layers.yaml"
bounded 2 "layers.yaml:4:.*99001 layers; a model has at most 8192" 5 "$mcomp" validate "$tmp/layers.yaml" # target 0.05 s
# shellcheck disable=SC2046
bounded 2 "unknown key 'x'" 5 "$mcomp" validate "$tmp/lin.yaml" $(seq 4000 | sed 's/.*/--set x.k&=1/') # target 0.1 s
# shellcheck disable=SC2046
bounded 2 "more than 4096 --set overrides" 5 "$mcomp" validate "$tmp/lin.yaml" $(seq 5000 | sed 's/.*/--set seed=&/')

# ---------------------------------------------------------------- IDX
# A gzip bomb whose header declares 60000 images of 4096 x 4096 (1 TB):
# refused from the header and the file's size, before inflating anything.
mkdir "$tmp/bomb"
{ printf '\0\0\10\3'; be32 60000; be32 4096; be32 4096; head -c 1048576 /dev/zero; } |
	gzip -1 > "$tmp/bomb/t10k-images-idx3-ubyte.gz"
{ printf '\0\0\10\1'; be32 60000; head -c 60000 /dev/zero; } | gzip > "$tmp/bomb/t10k-labels-idx1-ubyte.gz"
cat > "$tmp/small.yaml" << EOF
mcomp: 1
models:
  m:
    build: {input: [4], layers: [{linear: 2}]}
passes: []
output: small.safetensors
EOF
expect 0 'wrote' "$mcomp" run "$tmp/small.yaml"
bounded 1 'bomb/t10k-images-idx3-ubyte.gz: header promises 1006632960000 bytes of data, more than a gzip stream of [0-9]+ bytes can inflate to' \
	2 "$mcomp" eval "$tmp/small.safetensors" --data "$tmp/bomb" # target 0.01 s
# An honest header (1024 images of 256 x 256, 64 MB of zeros in 280 KB):
# more than 32 times the file is no image data set but a bomb; refused from
# the header, nothing inflated.
{ printf '\0\0\10\3'; be32 1024; be32 256; be32 256; head -c 67108864 /dev/zero; } |
	gzip -1 > "$tmp/bomb/t10k-images-idx3-ubyte.gz"
{ printf '\0\0\10\1'; be32 1024; head -c 1024 /dev/zero; } | gzip > "$tmp/bomb/t10k-labels-idx1-ubyte.gz"
bounded 1 'bomb/t10k-images-idx3-ubyte.gz: header promises 67108864 bytes of images, [0-9]+ times the gzip file.*looks like a gzip bomb; if the data is real, gunzip the file' \
	2 "$mcomp" eval "$tmp/small.safetensors" --data "$tmp/bomb" # target 0.01 s
# A plain file cannot lie about its size; its data set (8 MB of bytes, 32 MB
# of floats) against a limit of 16 MB: refused before the data is read.
mkdir "$tmp/plain"
{ printf '\0\0\10\3'; be32 128; be32 256; be32 256; head -c 8388608 /dev/zero; } > "$tmp/plain/t10k-images-idx3-ubyte"
{ printf '\0\0\10\1'; be32 128; head -c 128 /dev/zero; } > "$tmp/plain/t10k-labels-idx1-ubyte"
bounded 1 'plain/t10k-images-idx3-ubyte: an IDX data set of 128 images of 256 x 256 needs 40.0 MiB of memory, more than the limit of 16.0 MiB \(MCOMP_MAX_MEMORY\)' \
	2 env MCOMP_MAX_MEMORY=16M "$mcomp" eval "$tmp/small.safetensors" --data "$tmp/plain" # target 0.01 s
# A stream longer than its header says stops after one more byte.
{ printf '\0\0\10\3'; be32 1024; be32 16; be32 16; head -c 67108864 /dev/zero; } |
	gzip -1 > "$tmp/bomb/t10k-images-idx3-ubyte.gz"
bounded 1 'trailing garbage after the 262144 bytes of data the header describes' \
	2 "$mcomp" eval "$tmp/small.safetensors" --data "$tmp/bomb" # target 0.01 s
# Dimensions of 0xFFFFFFFF (a signed overflow in the host's shape check).
{ printf '\0\0\10\3'; be32 1; be32 4294967295; be32 4294967295; } > "$tmp/bomb/train-images-idx3-ubyte"
{ printf '\0\0\10\1'; be32 1; printf '\0'; } > "$tmp/bomb/train-labels-idx1-ubyte"
cat > "$tmp/dims.yaml" << EOF
mcomp: 1
data:
  train: {idx: bomb/train}
models:
  m:
    build: {input: [4], layers: [{linear: 2}]}
passes:
  - train: {model: m, epochs: 1}
EOF
# (a corrupt input file: exit 1, as at run time)
bounded 1 "dims.yaml:3:3: data split 'train': .*train-images-idx3-ubyte: IDX dimensions overflow" \
	2 "$mcomp" validate "$tmp/dims.yaml"
{ printf '\0\0\10\3'; be32 1; be32 65536; be32 65536; } > "$tmp/bomb/train-images-idx3-ubyte"
bounded 1 "train-images-idx3-ubyte: images of 65536 x 65536 values; mcomp takes at most" \
	2 "$mcomp" validate "$tmp/dims.yaml"

# ---------------------------------------------------------------- 1-D samples
# Training on samples of one dimension read shape[-1] (an index -1).
npy_header() { # DESCR SHAPE: a .npy 1.0 header of 118 bytes
	h="{'descr': '$1', 'fortran_order': False, 'shape': $2, }"
	while [ ${#h} -lt 117 ]; do h="$h "; done
	printf '\223NUMPY\1\0\166\0%s\n' "$h"
}
{ npy_header '<f4' '(8, 4)'; i=0; while [ $i -lt 32 ]; do le32 $((1065353216 * (i % 3 == 0))); i=$((i + 1)); done; } > "$tmp/x.npy"
{ npy_header '|u1' '(8,)'; printf '\0\1\0\1\0\1\0\1'; } > "$tmp/y.npy"
cat > "$tmp/flat.yaml" << EOF
mcomp: 1
seed: 1
data:
  train: {npy: {x: x.npy, y: y.npy}}
models:
  m:
    build: {input: [4], layers: [{linear: 2}]}
passes:
  - train: {model: m, epochs: 1, batch_size: 4}
output: flat.safetensors
EOF
bounded 0 'wrote .*flat.safetensors' 30 "$mcomp" run "$tmp/flat.yaml"

# ---------------------------------------------------------------- activations
# Small parameters, wide activations: a forward of 256 samples (the host's
# latency measure) needs 320 MB; refused before the executor allocates them.
{ npy_header '<f4' '(4, 65536)'; head -c 1048576 /dev/zero; } > "$tmp/ax.npy"
{ npy_header '|u1' '(4,)'; printf '\0\1\0\1'; } > "$tmp/ay.npy"
cat > "$tmp/wide.yaml" << EOF
mcomp: 1
data:
  test: {npy: {x: ax.npy, y: ay.npy}}
models:
  m:
    build: {input: [65536], layers: [relu, relu, relu, relu, {linear: 2}]}
passes:
  - eval: {model: m}
EOF
bounded 1 "wide.yaml: measuring model 'm': a forward batch of 256 samples \(activations\) needs 320.0 MiB of memory, more than the limit of 64.0 MiB" \
	5 "$mcomp" run "$tmp/wide.yaml" --max-memory 64M # target 0.05 s

finish
