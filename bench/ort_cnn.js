#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// ort_cnn.js - ONNX Runtime's inference latency on an exported model, timed
// the way bench/bench_train times mcomp's (lat1, lat256): one run of a batch
// per call, after 3 warm-up runs, calls repeated for at least MIN seconds
// (at least 5), the median printed in milliseconds. Used by bench/ort_cnn.sh.
//
//   node bench/ort_cnn.js MODEL.onnx NAME [--threads 2] [--min 0.3] [--batch 1,256]
//
// prints "RESULT lat<B>_<NAME> <ms>" per batch size. The input is random
// (uniform [0, 1)) of the model's per-sample shape [1, 28, 28] unless the
// model says otherwise. onnxruntime-node comes from tests/node (exit 77 when
// it is missing).
'use strict';

const path = require('path');

function die(msg, code) {
	process.stderr.write(`ort_cnn.js: ${msg}\n`);
	process.exit(code === undefined ? 1 : code);
}

let ort;
try {
	ort = require(path.join(__dirname, '..', 'tests', 'node', 'node_modules', 'onnxruntime-node'));
} catch (e) {
	die(`onnxruntime-node is not installed in tests/node: ${e.message.split('\n')[0]}`, 77);
}

function median(v) {
	const s = v.slice().sort((a, b) => a - b);
	const n = s.length;
	return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

async function main(argv) {
	const o = {threads: 2, min: 0.3, batch: '1,256', _: []};
	for (let i = 0; i < argv.length; i++) {
		const k = argv[i].startsWith('--') ? argv[i].slice(2) : null;
		if (k === null) {
			o._.push(argv[i]);
			continue;
		}
		if (!(k in o) || i + 1 >= argv.length)
			die(`bad option ${argv[i]}`, 2);
		o[k] = argv[++i];
	}
	if (o._.length !== 2)
		die('usage: ort_cnn.js MODEL.onnx NAME [--threads T] [--min S] [--batch B,...]', 2);
	const [model, name] = o._;
	const s = await ort.InferenceSession.create(model, {
		graphOptimizationLevel: 'all',
		executionMode: 'sequential',
		intraOpNumThreads: Number(o.threads),
		interOpNumThreads: 1,
	});
	const input = s.inputNames[0];
	for (const b of o.batch.split(',').map(Number)) {
		const per = 28 * 28;
		const x = new Float32Array(b * per);
		for (let i = 0; i < x.length; i++)
			x[i] = Math.random();
		const feeds = {[input]: new ort.Tensor('float32', x, [b, 1, 28, 28])};
		for (let i = 0; i < 3; i++)
			await s.run(feeds);
		const t = [];
		const t0 = process.hrtime.bigint();
		while (t.length < 5 || Number(process.hrtime.bigint() - t0) / 1e9 < Number(o.min)) {
			const a = process.hrtime.bigint();
			await s.run(feeds);
			t.push(Number(process.hrtime.bigint() - a) / 1e6);
		}
		console.log(`RESULT lat${b}_${name} ${median(t).toFixed(4)}`);
	}
}

main(process.argv.slice(2)).catch((e) => die(e.message));
