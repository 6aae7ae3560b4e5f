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

# finish [CODE]: prints the counts and exits 1 on a failure, else CODE (77: SKIP).
finish() {
	echo "${0##*/}: $pass passed, $fail failed"
	[ "$fail" = 0 ] || exit 1
	exit "${1:-0}"
}

# skip WHY...: SKIP, saying why.
skip() {
	echo "SKIP: $*"
	finish 77
}

# sanitized: true when this build is instrumented by AddressSanitizer
# (make check-sanitize): libmcomp then calls the ASan runtime.
sanitized() {
	nm -D "$MCOMP_BUILDDIR/.libs/libmcomp.so" 2> /dev/null | grep -q ' __asan_init'
}

# need_fashion_mnist: SKIP unless $data holds Fashion-MNIST's train and test images.
need_fashion_mnist() {
	[ -r "$data/train-images-idx3-ubyte.gz" ] && [ -r "$data/t10k-images-idx3-ubyte.gz" ] ||
		skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
}

# need_ort: SKIP unless node and onnxruntime-node run ($ortjs probe); then
# ort ARGS... runs tests/ort_run.js. Uses $tmp.
need_ort() {
	command -v node > /dev/null 2>&1 ||
		skip "no node (Node.js) to run ONNX Runtime (apt-get install nodejs npm)"
	node "$ortjs" probe > /dev/null 2> "$tmp/probe.txt"
	[ $? = 77 ] && skip "$(cat "$tmp/probe.txt")"
	return 0
}
ort() { node "$ortjs" "$@"; }

# train_model NAME LAYERS EPOCHS: $tmp/NAME.safetensors, trained on 3000
# images of $data (a few seconds; the ONNX tests check agreement, not accuracy).
train_model() {
	cat > "$tmp/$1.yaml" <<EOF
mcomp: 1
seed: 7
data:
  train: {idx: $data/train, count: 3000}
models:
  $1:
    build: {input: [1, 28, 28], layers: $2}
passes:
  - train: {model: $1, epochs: $3, batch_size: 64, optimizer: adam, lr: 0.003}
output: $1.safetensors
EOF
	expect 0 "wrote .*$1.safetensors" "$mcomp" run "$tmp/$1.yaml"
}

# quantize_model IN OUT QUANTIZE-PARAMS: $tmp/OUT.safetensors from $tmp/IN's,
# calibrated on 500 held-out training images.
quantize_model() {
	cat > "$tmp/$2.yaml" <<EOF
mcomp: 1
seed: 7
data:
  calib: {idx: $data/train, first: 55000, count: 500}
models:
  m: {load: $1.safetensors}
passes:
  - quantize: {model: m, $3}
output: $2.safetensors
EOF
	expect 0 "wrote .*$2.safetensors" "$mcomp" run "$tmp/$2.yaml"
}
