#!/bin/sh
# fuzz/make-corpus.sh - writes the seed corpora of fuzz/corpus/ anew: real
# files made by mcomp itself (tiny models trained, pruned, quantized,
# distilled into a cascade and exported to ONNX by `mcomp run` and `mcomp
# export` on a tiny IDX data set written here), the repository's own
# pipelines and test pipelines with --set overrides, the ONNX test models of
# tests/fixtures/onnx and a few of Debian's ONNX backend tests
# (libonnx-testdata), and NumPy arrays and archives as numpy writes them.
# Small on purpose (inputs of a few KB fuzz fastest).
#
#   MCOMP_BUILDDIR=BUILD sh fuzz/make-corpus.sh     (after make)
#
# Needs the built mcomp and python3 (its standard library only). What it
# writes is committed; run it again when a format changes.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${MCOMP_BUILDDIR:-$src}
mcomp=$build/mcomp
corpus=$src/fuzz/corpus
[ -x "$mcomp" ] || { echo "make-corpus: no $mcomp; build first" >&2; exit 2; }
export MCOMP_PASS_PATH="$build/passes/.libs" MCOMP_PROGRESS=0 OMP_NUM_THREADS=2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcomp-corpus-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for d in safetensors model idx npy pipeline cascade onnx; do
	rm -rf "${corpus:?}/$d"
	mkdir -p "$corpus/$d"
done

# ---------------------------------------------------------------- data
# 96 images of 8x8, 4 classes (a bright 2x2 square whose place is the
# label), as IDX raw and gzip'd, and as NumPy arrays of every dtype read.
python3 - "$tmp" "$corpus" <<'EOF'
import gzip, io, struct, sys, zipfile
tmp, corpus = sys.argv[1], sys.argv[2]
N, H, W = 96, 8, 8
imgs = bytearray(N * H * W)
labs = bytearray(N)
for i in range(N):
    c = i % 4
    labs[i] = c
    for y in range(2):
        for x in range(2):
            imgs[i * H * W + (1 + 4 * (c // 2) + y) * W + 1 + 4 * (c % 2) + x] = 255 - (i % 7)
def idx(magic_dims, data):
    return struct.pack('>I', 0x800 | len(magic_dims)) + b''.join(struct.pack('>I', d) for d in magic_dims) + bytes(data)
images, labels = idx([N, H, W], imgs), idx([N], labs)
for split in ('train', 't10k'):
    open(f'{tmp}/{split}-images-idx3-ubyte', 'wb').write(images)
    open(f'{tmp}/{split}-labels-idx1-ubyte', 'wb').write(labels)
SEP = b'\n@@@@\n'
def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode='wb', mtime=0) as g:
        g.write(b)
    return out.getvalue()
n8 = 8  # seeds hold fewer images: small inputs fuzz faster
small_i, small_l = idx([n8, H, W], imgs[:n8 * H * W]), idx([n8], labs[:n8])
seeds = {
    'raw-pair': small_i + SEP + small_l,
    'raw-images': small_i,
    'gz-pair': gz(small_i) + SEP + gz(small_l),
    'gz-images': gz(small_i),
    'mixed-pair': gz(small_i) + SEP + small_l,
    'one-image': idx([1, 2, 3], b'\x00\x80\xff\x01\x02\x03') + SEP + idx([1], b'\x05'),
    'swapped': small_l + SEP + small_i,
    'gz-multimember': gz(small_i[:40]) + gz(small_i[40:]) + SEP + small_l,
}
for k, v in seeds.items():
    open(f'{corpus}/idx/{k}', 'wb').write(v)

def npy(descr, shape, data, version=1, fortran=False):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, 'True' if fortran else 'False',
        ''.join(f'{s}, ' for s in shape).rstrip(' ') if len(shape) != 1 else f'{shape[0]},')
    pre = 10 if version == 1 else 12
    total = (pre + len(d) + 1 + 63) // 64 * 64
    hdr = d.encode() + b' ' * (total - pre - len(d) - 1) + b'\n'
    ln = struct.pack('<H', len(hdr)) if version == 1 else struct.pack('<I', len(hdr))
    return b'\x93NUMPY' + bytes([version, 0]) + ln + hdr + data
n = 6
x_u8 = bytes(imgs[:n * H * W])
x_f4 = b''.join(struct.pack('<f', v / 255.0) for v in imgs[:n * H * W])
seeds = {
    'u8-nhw': npy('|u1', (n, H, W), x_u8) + SEP + npy('|u1', (n,), bytes(labs[:n])),
    'f4-nchw': npy('<f4', (n, 1, H, W), x_f4) + SEP + npy('<i8', (n,), b''.join(struct.pack('<q', v) for v in labs[:n])),
    'f4-features': npy('<f4', (n, H * W), x_f4) + SEP + npy('<i4', (n,), b''.join(struct.pack('<i', v) for v in labs[:n])),
    'v2-header': npy('<f4', (n, 2, 4, 8), x_f4, version=2) + SEP + npy('|u1', (n,), bytes(labs[:n]), version=2),
    'v3-header': npy('|u1', (n, H * W), x_u8, version=3),
    'inputs-only': npy('|u1', (n, H, W), x_u8),
    'fortran': npy('<f4', (n, H * W), x_f4, fortran=True),
    'f8-labels': npy('|u1', (2, 2), b'\x01\x02\x03\x04') + SEP + npy('<f8', (2,), struct.pack('<dd', 0, 1)),
    'scalar': npy('<f4', (), struct.pack('<f', 1.0)),
    'big-endian': npy('>f4', (1, 2), struct.pack('>ff', 1, 2)),
}
for k, v in seeds.items():
    open(f'{corpus}/npy/{k}', 'wb').write(v)
arrs = {'x.npy': npy('|u1', (n, H, W), x_u8), 'y.npy': npy('|u1', (n,), bytes(labs[:n]))}
for method, name in ((zipfile.ZIP_STORED, 'npz-stored'), (zipfile.ZIP_DEFLATED, 'npz-deflated')):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', method) as z:
        for k, v in arrs.items():
            zi = zipfile.ZipInfo(k, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = method
            z.writestr(zi, v)
    open(f'{corpus}/npy/{name}', 'wb').write(out.getvalue())
out = io.BytesIO()
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED, allowZip64=True) as z:
    for k, v in arrs.items():
        zi = zipfile.ZipInfo(k, date_time=(1980, 1, 1, 0, 0, 0))
        zi.compress_type = zipfile.ZIP_DEFLATED
        with z.open(zi, 'w', force_zip64=True) as f:
            f.write(v)
open(f'{corpus}/npy/npz-zip64', 'wb').write(out.getvalue())
EOF

# ---------------------------------------------------------------- models
cat > "$tmp/models.yaml" << EOF
mcomp: 1
seed: 7
data:
  train: {idx: $tmp/train}
  val:   {idx: $tmp/t10k, first: 0, count: 48}
  test:  {idx: $tmp/t10k}
models:
  mlp:
    build: {input: [1, 8, 8], layers: [flatten, {linear: 32}, relu, {linear: 4}]}
  cnn:
    build:
      input: [1, 8, 8]
      layers: [{conv2d: 2}, relu, {maxpool2d: 2}, flatten, {linear: 4}]
passes:
  - train: {model: cnn, epochs: 1, batch_size: 16, optimizer: adam, lr: 0.01}
  - train: {model: mlp, epochs: 1, batch_size: 16, optimizer: adam, lr: 0.01}
output: {model: mlp, path: $tmp/mlp.safetensors}
report: $tmp/r0.json
EOF
run() { "$mcomp" run "$@" --quiet > "$tmp/run.log" 2>&1 || { cat "$tmp/run.log"; exit 1; }; }
run "$tmp/models.yaml"
run "$tmp/models.yaml" --set output.model=cnn --set output.path="$tmp/cnn.safetensors"
# each pass's output from the trained models
one() { # NAME MODEL PASS-YAML...
	name=$1 model=$2
	shift 2
	{
		printf 'mcomp: 1\nseed: 7\ndata:\n  train: {idx: %s/train}\n  val: {idx: %s/t10k, count: 48}\n  test: {idx: %s/t10k}\n' "$tmp" "$tmp" "$tmp"
		printf 'models:\n  m: {load: %s/%s.safetensors}\n  c: {load: %s/cnn.safetensors}\npasses:\n' "$tmp" "$model" "$tmp"
		for p; do printf '  - %s\n' "$p"; done
		printf 'output: {model: m, path: %s/%s.safetensors}\nreport: %s/r.json\n' "$tmp" "$name" "$tmp"
	} > "$tmp/$name.yaml"
	run "$tmp/$name.yaml"
}
one pruned mlp '{prune: {model: m, sparsity: 0.7, finetune_epochs: 0}}'
one pruned-2of4 mlp '{prune: {model: m, method: "n:m", nm: "2:4", finetune_epochs: 0}}'
one structured mlp '{prune: {model: m, method: structured, sparsity: 0.5, finetune_epochs: 0}}'
one int8-static mlp '{quantize: {model: m, bits: 8, granularity: per-channel, mode: static, calibration_data: val}}'
one int8-dynamic mlp '{quantize: {model: m, bits: 8, mode: dynamic}}'
one int4-weights mlp '{quantize: {model: m, bits: 4, granularity: per-group, group_size: 32, mode: weight-only}}'
one cnn-int8 cnn '{quantize: {model: m, bits: 8, mode: static, calibration_data: val}}'
one pruned-int8 mlp '{prune: {model: m, sparsity: 0.5, finetune_epochs: 0}}' \
	'{quantize: {model: m, bits: 8, mode: weight-only}}'
one clustered mlp '{prune: {model: m, sparsity: 0.7, finetune_epochs: 0}}' \
	'{cluster: {model: m, bits: 3, finetune_epochs: 0}}'
one clustered-dense mlp '{cluster: {model: m, bits: 2, finetune_epochs: 0}}'
one cascade-src mlp "{cascade: {stages: [m, c], confidence: margin, calibrate: val, target: accuracy-drop, max_drop: 0.2, output: $tmp/cascade.safetensors}}"
# zstd-coded files (a name ending in .zst), as mcomp writes them: read by
# their magic number, decoded, then parsed
for m in mlp pruned int8-static; do
	printf 'mcomp: 1\nmodels:\n  m: {load: %s/%s.safetensors}\npasses: []\noutput: %s/%s.safetensors.zst\n' \
		"$tmp" "$m" "$tmp" "$m" > "$tmp/zst-$m.yaml"
	run "$tmp/zst-$m.yaml"
done
one cascade-zst mlp "{cascade: {stages: [m, c], confidence: margin, calibrate: val, target: accuracy-drop, max_drop: 0.2, output: $tmp/cascade.safetensors.zst}}"

python3 - "$tmp" "$corpus" <<'EOF'
import json, struct, sys
tmp, corpus = sys.argv[1], sys.argv[2]
SEP = b'\n@@@@\n'
def split(b):
    n = struct.unpack('<Q', b[:8])[0]
    return b[8:8 + n].rstrip(b' '), b[8 + n:]
models = ['mlp', 'cnn', 'pruned', 'pruned-2of4', 'structured', 'int8-static', 'int8-dynamic',
          'int4-weights', 'cnn-int8', 'pruned-int8', 'clustered', 'clustered-dense']
for m in models:
    b = open(f'{tmp}/{m}.safetensors', 'rb').read()
    h, d = split(b)
    open(f'{corpus}/model/{m}.json', 'wb').write(h + SEP + d)   # the JSON form
    open(f'{corpus}/safetensors/{m}', 'wb').write(b)
for m in ('mlp', 'int8-static', 'pruned'):
    open(f'{corpus}/model/{m}.raw', 'wb').write(open(f'{tmp}/{m}.safetensors', 'rb').read())
    open(f'{corpus}/model/{m}.zst', 'wb').write(open(f'{tmp}/{m}.safetensors.zst', 'rb').read())
open(f'{corpus}/cascade/cascade.zst', 'wb').write(open(f'{tmp}/cascade.safetensors.zst', 'rb').read())
b = open(f'{tmp}/cascade.safetensors', 'rb').read()
h, d = split(b)
open(f'{corpus}/cascade/cascade.json', 'wb').write(h + SEP + d)
open(f'{corpus}/cascade/cascade.raw', 'wb').write(b)
open(f'{corpus}/safetensors/cascade', 'wb').write(b)
# a one-stage cascade and a three-stage one, from the same members
meta = json.loads(h)['__metadata__']
c = json.loads(meta['mcomp.cascade'])
hj = json.loads(h)
st = c['stages']
c1 = dict(c, stages=[dict(st[-1])])
c1['stages'][0].pop('threshold', None)
def cascade_of(cj, keep):
    hh = {k: v for k, v in hj.items() if k == '__metadata__' or k.split('/')[0] in keep}
    # offsets follow the kept tensors, in order
    order = sorted((v['data_offsets'][0], k) for k, v in hh.items() if k != '__metadata__')
    out, pos = b'', 0
    for _, k in order:
        a, e = hj[k]['data_offsets']
        out += d[a:e]
        hh[k] = dict(hh[k], data_offsets=[pos, pos + e - a])
        pos += e - a
    hh['__metadata__'] = dict(meta, **{'mcomp.cascade': json.dumps(cj)})
    if 'mcomp.sparse' in meta:
        sp = {k: v for k, v in json.loads(meta['mcomp.sparse']).items() if k.split('/')[0] in keep}
        hh['__metadata__']['mcomp.sparse'] = json.dumps(sp)
    return json.dumps(hh).encode() + SEP + out
open(f'{corpus}/cascade/one-stage.json', 'wb').write(cascade_of(c1, {st[-1]['name']}))
c2 = dict(c, confidence='entropy')
c2['stages'] = [dict(st[0], threshold='-inf'), st[1]]
open(f'{corpus}/cascade/entropy.json', 'wb').write(cascade_of(c2, {s['name'] for s in st}))
# plain safetensors files (any writer's): other dtypes, metadata, empty
def st_file(tensors, meta=None):
    hh, data = {}, b''
    for name, dt, shape, payload in tensors:
        hh[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [len(data), len(data) + len(payload)]}
        data += payload
    if meta is not None:
        hh['__metadata__'] = meta
    j = json.dumps(hh).encode()
    j += b' ' * (-len(j) % 8)
    return struct.pack('<Q', len(j)) + j + data
plain = {
    'dtypes': st_file([('a', 'F32', [2, 2], struct.pack('<4f', 1, 2, 3, 4)),
                       ('b', 'F16', [2], b'\x00\x3c\x00\x40'), ('c', 'BF16', [1], b'\x80\x3f'),
                       ('d', 'I8', [3], b'\x01\xff\x7f'), ('e', 'U8', [1, 1, 2], b'\x00\xff'),
                       ('f', 'I32', [1], struct.pack('<i', -5)), ('g', 'I64', [1], struct.pack('<q', 7)),
                       ('h', 'F64', [1], struct.pack('<d', 0.5)), ('i', 'BOOL', [2], b'\x00\x01')],
                      {'format': 'pt', 'note': 'hello'}),
    'empty': st_file([]),
    'scalar-and-zero': st_file([('s', 'F32', [], struct.pack('<f', 3)), ('z', 'F32', [0, 4], b'')]),
}
for k, v in plain.items():
    open(f'{corpus}/safetensors/{k}', 'wb').write(v)
EOF

# ---------------------------------------------------------------- ONNX
for m in mlp cnn int8-static int8-dynamic int4-weights cnn-int8 pruned; do
	"$mcomp" export "$tmp/$m.safetensors" -o "$corpus/onnx/mcomp-$m.onnx" > "$tmp/x.log" 2>&1 || { cat "$tmp/x.log"; exit 1; }
done
"$mcomp" export "$tmp/int4-weights.safetensors" -o "$corpus/onnx/mcomp-int4-f32.onnx" --int4 f32 > "$tmp/x.log" 2>&1 || { cat "$tmp/x.log"; exit 1; }
for f in sin padnet-opset13 resnet-opset13; do
	cp "$src/tests/fixtures/onnx/$f.onnx" "$corpus/onnx/torch-$f.onnx"
done
testdata=${MCOMP_ONNX_TESTDATA:-/usr/share/libonnx-testdata/data}
if [ -d "$testdata" ]; then
	for t in node/test_gemm_default_single_elem_vector_bias node/test_conv_with_strides_padding \
		node/test_maxpool_2d_pads node/test_averagepool_2d_pads node/test_batchnorm_example \
		node/test_relu node/test_leakyrelu node/test_clip node/test_hardswish \
		node/test_softmax_axis_1 node/test_flatten_axis1 node/test_reshape_reordered_all_dims \
		node/test_globalaveragepool node/test_matmul_2d node/test_concat_2d_axis_0 \
		node/test_constant_pad node/test_squeeze node/test_unsqueeze_axis_0 \
		pytorch-converted/test_Conv2d pytorch-converted/test_Linear \
		pytorch-converted/test_MaxPool2d pytorch-converted/test_AvgPool2d \
		pytorch-converted/test_BatchNorm2d_eval pytorch-converted/test_PReLU_1d \
		pytorch-converted/test_Softmax pytorch-converted/test_ReLU6; do
		f=$testdata/$t/model.onnx
		[ -f "$f" ] && [ "$(wc -c < "$f")" -lt 20000 ] && cp "$f" "$corpus/onnx/backend-${t##*/}.onnx"
	done
fi

# ---------------------------------------------------------------- pipelines
# The pipelines of the repository and of the tests as they are (their paths
# point at the harness's fixtures: ../data/tiny, ../models/tiny.safetensors);
# the good ones also with --set overrides after the separator.
i=0
for f in "$src"/pipelines/*.yaml "$src"/tests/pipelines/good/*.yaml "$src"/tests/pipelines/bad/*.yaml; do
	[ "$(wc -c < "$f")" -lt 4096 ] || continue
	case $f in */bad/*) kind=bad ;; */good/*) kind=good ;; *) kind=recipe ;; esac
	cp "$f" "$corpus/pipeline/$kind-$(basename "$f")"
done
sep='@@@@'
over() { # NAME FILE SET...
	name=$1 file=$2
	shift 2
	{ cat "$file"; echo "$sep"; for s; do echo "$s"; done; } > "$corpus/pipeline/set-$name.yaml"
}
over basic "$src/tests/pipelines/good/basic.yaml" seed=3 passes.0.train.epochs=2 \
	'data.extra.idx=../data/tiny' 'models.mlp.build.layers.1.linear=32'
over minimal "$src/tests/pipelines/good/minimal.yaml" 'output=out/m2.safetensors' 'report=r.json'
over quickstart "$src/pipelines/quickstart.yaml" 'passes.train.epochs=1' \
	'data.train.idx=../data/tiny' 'data.test.idx=../data/tiny' 'passes.0.train.lr=1e-4'
over npy "$src/tests/pipelines/good/basic.yaml" \
	'data.train={npy: {x: ../data/x.npy, y: ../data/y.npy}}' 'seed=16'
over load "$src/tests/pipelines/good/minimal.yaml" \
	'models.t={load: ../models/tiny.safetensors}' 'data.test.idx=../data/tiny'
over bad-key "$src/tests/pipelines/good/basic.yaml" 'passes.0.train.epoch=2' 'nope'
over blocks "$src/tests/pipelines/good/blocks.yaml" 'models.r.build.layers.2.basic.out=16' \
	'blocks.ir.params.expansion=3' 'models.r.build.layers.4.repeat=3'
echo "make-corpus: $(find "$corpus" -type f | wc -l) files, $(du -sk "$corpus" | cut -f1) KB"
