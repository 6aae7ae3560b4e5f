#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// ort_run.js - ONNX Runtime on the ONNX files mcomp exports, for
// tests/onnx_export.sh and bench/ort_int8.sh. onnxruntime-node comes from
// tests/node (scripts/setup.sh installs it); without it this exits 77, the
// SKIP of make check.
//
//   node ort_run.js run MODEL.onnx X.npy Y.npy [--batch B] [--threads T] [--optimize LEVEL]
//       the model's output for the inputs X.npy (float32 [N, ...], as the
//       model's input), in batches of B (default: all), written as float32
//       [N, classes] to Y.npy; --optimize disabled runs the graph as written
//       (QDQ in float: ONNX's reference semantics), the default all with
//       ONNX Runtime's fusions (QDQ into integer kernels)
//   node ort_run.js bench MODEL.onnx [--batch 256] [--seconds 3] [--threads T]
//       throughput at one batch size on random inputs: prints
//       "MODEL batch B: S samples/s (ms per batch)"
//   node ort_run.js latency MODEL.onnx [--batch 1] [--seconds 0.5] [--threads T]
//       the median time of single runs at one batch size on fixed inputs:
//       prints "RESULT lat_bB_ms MS" (bench/run.sh ort)
//   node ort_run.js idx IMAGES.gz --first F --count N -o X.npy [--labels LABELS.gz Y.npy]
//       N images of an IDX file from F on, / 255 as mcomp reads them, as
//       float32 [N, 1, H, W]; with --labels, their labels as uint8 [N]
//   node ort_run.js compare A.npy B.npy [--labels Y.npy]
//       prints one JSON line: the largest |A - B|, the argmax disagreements
//       and, with labels, how many rows of each argmax gets right
//   node ort_run.js meta MODEL.onnx
//       the model's metadata_props, one "key=value" a line
//   node ort_run.js cascade STAGE.onnx X.npy Y.npy [--threads T] [--optimize LEVEL]
//       a cascade mcomp exported (one file per stage, any of them given):
//       the stages, thresholds and confidence from metadata_props
//       "mcomp.cascade", each sample's logits from the stage it exits at
//       (the rule of docs/interop.md) to Y.npy; prints one JSON line with
//       how many samples exit at each stage
//   node ort_run.js probe
//       prints onnxruntime-node's version; exits 77 when it is missing
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

function die(msg, code) {
	process.stderr.write(`ort_run.js: ${msg}\n`);
	process.exit(code === undefined ? 1 : code);
}

function loadOrt() {
	try {
		return require(path.join(__dirname, 'node', 'node_modules', 'onnxruntime-node'));
	} catch (e) {
		die(`onnxruntime-node is not installed in ${path.join(__dirname, 'node')} ` +
		    `(run scripts/setup.sh, or: cd tests/node && npm install --ignore-scripts): ` +
		    `${e.message.split('\n')[0]}`, 77);
	}
}

// ---------------------------------------------------------------- .npy

const DTYPES = {'<f4': Float32Array, '|u1': Uint8Array, '<u1': Uint8Array};

function readNpy(file) {
	const b = fs.readFileSync(file);
	if (b.length < 10 || b.toString('latin1', 0, 6) !== '\x93NUMPY')
		die(`${file}: not a .npy file`);
	const major = b[6];
	const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
	const start = (major === 1 ? 10 : 12) + hlen;
	const header = b.toString('latin1', major === 1 ? 10 : 12, start);
	const descr = /'descr':\s*'([^']+)'/.exec(header);
	const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
	if (!descr || !shape || /'fortran_order':\s*True/.test(header))
		die(`${file}: a C-order float32 or uint8 array, please (header ${header.trim()})`);
	const T = DTYPES[descr[1]];
	if (!T)
		die(`${file}: dtype ${descr[1]}; ort_run.js reads float32 and uint8`);
	const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
	const n = dims.reduce((a, d) => a * d, 1);
	const raw = b.subarray(start, start + n * T.BYTES_PER_ELEMENT);
	if (raw.length !== n * T.BYTES_PER_ELEMENT)
		die(`${file}: the header says ${n} values, the file is shorter`);
	const data = new T(n);
	new Uint8Array(data.buffer).set(raw);
	return {dims, data};
}

function writeNpy(file, dims, data) {
	const descr = data instanceof Float32Array ? '<f4' : '|u1';
	const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
	let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
	header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
	const h = Buffer.alloc(10);
	h.write('\x93NUMPY', 0, 'latin1');
	h[6] = 1;
	h[7] = 0;
	h.writeUInt16LE(header.length, 8);
	fs.writeFileSync(file, Buffer.concat([h, Buffer.from(header, 'latin1'),
					      Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

// ---------------------------------------------------------------- IDX

function readIdx(file) {
	let b = fs.readFileSync(file);
	if (b[0] === 0x1f && b[1] === 0x8b)
		b = zlib.gunzipSync(b);
	if (b[0] !== 0 || b[1] !== 0 || b[2] !== 8)
		die(`${file}: not an IDX file of unsigned bytes`);
	const nd = b[3], dims = [];
	for (let d = 0; d < nd; d++)
		dims.push(b.readUInt32BE(4 + 4 * d));
	return {dims, data: b.subarray(4 + 4 * nd)};
}

// ---------------------------------------------------------------- options

function options(argv, spec) {
	const o = {_: []};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (!a.startsWith('--') && a !== '-o') {
			o._.push(a);
			continue;
		}
		const key = a === '-o' ? 'o' : a.slice(2);
		if (!(key in spec))
			die(`unknown option ${a}`, 2);
		const n = spec[key];
		if (i + n >= argv.length)
			die(`${a} needs ${n} value(s)`, 2);
		o[key] = n === 1 ? argv[i + 1] : argv.slice(i + 1, i + 1 + n);
		i += n;
	}
	return o;
}

function sessionOptions(o) {
	// --optimize disabled: the graph as written (QDQ in float, the ONNX reference
	// semantics); all (the default): with ONNX Runtime's fusions (QDQ into QGemm ...)
	const so = {graphOptimizationLevel: o.optimize || 'all', executionMode: 'sequential'};
	if (o.threads)
		so.intraOpNumThreads = Number(o.threads);
	return so;
}

// ---------------------------------------------------------------- commands

async function run(argv) {
	const o = options(argv, {batch: 1, threads: 1, optimize: 1});
	if (o._.length !== 3)
		die('run MODEL.onnx X.npy Y.npy [--batch B] [--threads T]', 2);
	const ort = loadOrt();
	const [model, xf, yf] = o._;
	const x = readNpy(xf);
	if (!(x.data instanceof Float32Array))
		die(`${xf}: float32 inputs, please (as the model reads them)`, 2);
	const s = await ort.InferenceSession.create(model, sessionOptions(o));
	const n = x.dims[0], per = x.data.length / n, B = Number(o.batch || n);
	let out = null, classes = 0;
	for (let i = 0; i < n; i += B) {
		const m = Math.min(B, n - i);
		const t = new ort.Tensor('float32', x.data.subarray(i * per, (i + m) * per),
					 [m, ...x.dims.slice(1)]);
		const r = (await s.run({[s.inputNames[0]]: t}))[s.outputNames[0]];
		if (!out) {
			classes = r.data.length / m;
			out = new Float32Array(n * classes);
		}
		out.set(r.data, i * classes);
	}
	writeNpy(yf, [n, classes], out);
}

async function bench(argv) {
	const o = options(argv, {batch: 1, seconds: 1, threads: 1, shape: 1, optimize: 1});
	if (o._.length !== 1)
		die('bench MODEL.onnx [--batch 256] [--seconds 3] [--threads T] [--shape 1,28,28]', 2);
	const ort = loadOrt();
	const B = Number(o.batch || 256), secs = Number(o.seconds || 3);
	const shape = (o.shape || '1,28,28').split(',').map(Number);
	const per = shape.reduce((a, d) => a * d, 1);
	const data = new Float32Array(B * per);
	let seed = 12345;
	for (let k = 0; k < data.length; k++) {
		seed = (seed * 1103515245 + 12345) >>> 0;
		data[k] = (seed >>> 8) / 16777216;
	}
	const s = await ort.InferenceSession.create(o._[0], sessionOptions(o));
	const feed = {[s.inputNames[0]]: new ort.Tensor('float32', data, [B, ...shape])};
	for (let w = 0; w < 5; w++)
		await s.run(feed);
	let runs = 0;
	const t0 = process.hrtime.bigint();
	let dt = 0;
	while (dt < secs) {
		await s.run(feed);
		runs++;
		dt = Number(process.hrtime.bigint() - t0) / 1e9;
	}
	console.log(`${path.basename(o._[0])} batch ${B}: ${(runs * B / dt).toFixed(0)} samples/s ` +
		    `(${(1000 * dt / runs).toFixed(3)} ms per batch)`);
}

// latency: the median of single timed runs, as bench/bench_infer.c times mcomp
// (two warm-up runs, then at least 20 and at least --seconds, at most 200).
async function latency(argv) {
	const o = options(argv, {batch: 1, seconds: 1, threads: 1, shape: 1, optimize: 1});
	if (o._.length !== 1)
		die('latency MODEL.onnx [--batch 1] [--seconds 0.5] [--threads T] [--shape 1,28,28]', 2);
	const ort = loadOrt();
	const B = Number(o.batch || 1), secs = Number(o.seconds || 0.5);
	const shape = (o.shape || '1,28,28').split(',').map(Number);
	const data = new Float32Array(B * shape.reduce((a, d) => a * d, 1));
	let seed = 12345;
	for (let k = 0; k < data.length; k++) {
		seed = (seed * 1664525 + 1013904223) >>> 0;
		data[k] = (seed >>> 8) / 16777216;
	}
	const s = await ort.InferenceSession.create(o._[0], sessionOptions(o));
	const feed = {[s.inputNames[0]]: new ort.Tensor('float32', data, [B, ...shape])};
	for (let w = 0; w < 2; w++)
		await s.run(feed);
	const t = [], start = process.hrtime.bigint();
	while (t.length < 200 && (t.length < 20 || Number(process.hrtime.bigint() - start) / 1e9 < secs)) {
		const t0 = process.hrtime.bigint();
		await s.run(feed);
		t.push(Number(process.hrtime.bigint() - t0) / 1e6);
	}
	t.sort((a, b) => a - b);
	console.log(`RESULT lat_b${B}_ms ${t[t.length >> 1].toPrecision(6)}`);
}

function idx(argv) {
	const o = options(argv, {first: 1, count: 1, o: 1, labels: 2});
	if (o._.length !== 1 || !o.o)
		die('idx IMAGES.gz --first F --count N -o X.npy [--labels LABELS.gz Y.npy]', 2);
	const im = readIdx(o._[0]);
	const first = Number(o.first || 0), total = im.dims[0];
	const count = Math.min(Number(o.count || total - first), total - first);
	const per = im.dims.slice(1).reduce((a, d) => a * d, 1);
	const x = new Float32Array(count * per);
	for (let k = 0; k < x.length; k++)
		x[k] = im.data[first * per + k] * (1 / 255); // in double, rounded once: as mcomp
	writeNpy(o.o, [count, 1, ...im.dims.slice(1)], x);
	if (o.labels) {
		const lb = readIdx(o.labels[0]);
		writeNpy(o.labels[1], [count], Uint8Array.from(lb.data.subarray(first, first + count)));
	}
}

function argmax(v, off, n) {
	let best = 0;
	for (let c = 1; c < n; c++)
		if (v[off + c] > v[off + best])
			best = c;
	return best;
}

function compare(argv) {
	const o = options(argv, {labels: 1});
	if (o._.length !== 2)
		die('compare A.npy B.npy [--labels Y.npy]', 2);
	const a = readNpy(o._[0]), b = readNpy(o._[1]);
	if (a.data.length !== b.data.length || a.dims[0] !== b.dims[0])
		die(`${o._[0]} [${a.dims}] and ${o._[1]} [${b.dims}] differ in shape`);
	const n = a.dims[0], c = a.data.length / n;
	const y = o.labels ? readNpy(o.labels).data : null;
	let max = 0, maxRel = 0, disagree = 0, ca = 0, cb = 0;
	for (let i = 0; i < a.data.length; i++) {
		const d = Math.abs(a.data[i] - b.data[i]);
		max = Math.max(max, d);
		maxRel = Math.max(maxRel, d / Math.max(1, Math.abs(a.data[i])));
	}
	for (let r = 0; r < n; r++) {
		const pa = argmax(a.data, r * c, c), pb = argmax(b.data, r * c, c);
		disagree += pa !== pb;
		if (y) {
			ca += pa === y[r];
			cb += pb === y[r];
		}
	}
	const res = {rows: n, max_abs_diff: max, max_rel_diff: maxRel, argmax_disagree: disagree};
	if (y) {
		res.correct_a = ca;
		res.correct_b = cb;
	}
	console.log(JSON.stringify(res));
}

// metadata_props without an ONNX parser: ModelProto field 14 is a repeated
// StringStringEntryProto {1: key, 2: value}; every other field is skipped.
function readMeta(file) {
	const b = fs.readFileSync(file), props = [];
	let i = 0;
	const varint = () => {
		let v = 0, mul = 1, byte;
		do {
			if (i >= b.length)
				die(`${file}: truncated`);
			byte = b[i++];
			v += (byte & 0x7f) * mul;
			mul *= 128;
		} while (byte & 0x80);
		return v;
	};
	const fields = (end, cb) => {
		while (i < end) {
			const tag = varint(), f = Math.floor(tag / 8), wt = tag & 7;
			if (wt === 0) {
				varint();
			} else if (wt === 1) {
				i += 8;
			} else if (wt === 5) {
				i += 4;
			} else if (wt === 2) {
				const len = varint(), at = i;
				cb(f, at, len);
				i = at + len;
			} else {
				die(`${file}: wire type ${wt}: not a protobuf`);
			}
		}
	};
	fields(b.length, (f, at, len) => {
		if (f !== 14)
			return;
		const kv = {};
		fields(at + len, (g, a2, l2) => {
			kv[g] = b.toString('utf8', a2, a2 + l2);
		});
		props.push([kv[1] || '', kv[2] || '']);
	});
	return props;
}

function meta(argv) {
	if (argv.length !== 1)
		die('meta MODEL.onnx', 2);
	for (const [k, v] of readMeta(argv[0]))
		console.log(`${k}=${v}`);
}

// A stage's confidence in one row of logits, as docs/interop.md states the
// rule (and mcomp's mc_confidence computes it): in double, rounded to float32.
function confidence(kind, z, off, n) {
	let top = 0;
	for (let j = 1; j < n; j++)
		if (z[off + j] > z[off + top])
			top = j;
	const mx = z[off + top];
	let s = 0, e2 = 0, ez = 0;
	for (let j = 0; j < n; j++) {
		const d = z[off + j] - mx, e = Math.exp(d);
		s += e;
		if (e > 0)
			ez += e * d;
		if (j !== top && e > e2)
			e2 = e;
	}
	const v = {'max-prob': 1 / s, 'margin': (1 - e2) / s, 'entropy': ez / s - Math.log(s)}[kind];
	if (v === undefined)
		die(`unknown confidence '${kind}'`);
	return Math.fround(v);
}

function threshold(t) {
	return t === 'inf' ? Infinity : t === '-inf' ? -Infinity : Math.fround(Number(t));
}

async function cascade(argv) {
	const o = options(argv, {threads: 1, optimize: 1});
	if (o._.length !== 3)
		die('cascade STAGE.onnx X.npy Y.npy [--threads T]', 2);
	const ort = loadOrt();
	const [first, xf, yf] = o._;
	const m = readMeta(first).find(([k]) => k === 'mcomp.cascade');
	if (!m)
		die(`${first}: no "mcomp.cascade" in metadata_props: not a stage of an exported cascade`);
	const c = JSON.parse(m[1]);
	if (c.format !== 1)
		die(`${first}: cascade format ${c.format}; this reads 1`);
	const x = readNpy(xf);
	const n = x.dims[0], per = x.data.length / n;
	let rows = Array.from({length: n}, (_, r) => r), out = null, classes = 0;
	const exits = [];
	for (let s = 0; s < c.stages.length; s++) {
		const st = c.stages[s], last = s === c.stages.length - 1;
		const sess = await ort.InferenceSession.create(
		    path.join(path.dirname(first), st.file), sessionOptions(o));
		const xs = new Float32Array(rows.length * per);
		rows.forEach((r, k) => xs.set(x.data.subarray(r * per, (r + 1) * per), k * per));
		let z = new Float32Array(0);
		if (rows.length) {
			const t = new ort.Tensor('float32', xs, [rows.length, ...x.dims.slice(1)]);
			z = (await sess.run({[sess.inputNames[0]]: t}))[sess.outputNames[0]].data;
		}
		if (!out && rows.length) {
			classes = z.length / rows.length;
			out = new Float32Array(n * classes);
		}
		const thr = last ? null : threshold(st.threshold), next = [];
		let k = 0;
		rows.forEach((r, i) => {
			if (last || confidence(c.confidence, z, i * classes, classes) >= thr) {
				out.set(z.subarray(i * classes, (i + 1) * classes), r * classes);
				k++;
			} else {
				next.push(r);
			}
		});
		exits.push(k);
		rows = next;
	}
	writeNpy(yf, [n, classes], out);
	console.log(JSON.stringify({rows: n, stages: c.stages.map((st) => st.name), exits}));
}

function probe() {
	console.log(`onnxruntime-node ${loadOrt().env.versions.node}`);
}

const cmds = {run, bench, latency, idx, compare, meta, cascade, probe};
const cmd = cmds[process.argv[2]];
if (!cmd)
	die(`usage: ort_run.js ${Object.keys(cmds).join('|')} ... (see the comment at its top)`, 2);
Promise.resolve(cmd(process.argv.slice(3))).catch((e) => die(e.stack || String(e)));
