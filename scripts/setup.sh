#!/bin/sh
# Installs every package mcomp needs (Debian 12, as root), then configures and
# builds it in this folder. Safe to run again: it installs only what is
# missing and rebuilds only what changed.
set -eu
cd "$(dirname "$0")/.."

packages="build-essential autoconf automake libtool pkg-config libyaml-dev check
libjansson-dev zlib1g-dev libzstd-dev nettle-dev dataset-fashion-mnist time bc jq
protobuf-c-compiler libprotobuf-c-dev libonnx-dev libonnx-testdata
libopenmpi-dev openmpi-bin
g++ libflatbuffers-dev flatbuffers-compiler
python3-numpy python3-pyarmnn libarmnntfliteparser22 libarmnn-cpuref-backend22"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "setup: run as root (or with sudo) to install packages" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
make -j"$(nproc)"

# ONNX Runtime for the ONNX export tests (tests/onnx_export.sh): the
# onnxruntime-node version pinned in tests/node/package-lock.json, into
# tests/node/node_modules. --ignore-scripts skips its install script (which
# fetches optional GPU binaries); the CPU binding for Linux x64 is in the
# npm tarball itself. Without npm the tests SKIP.
if command -v npm > /dev/null 2>&1; then
	if [ ! -d tests/node/node_modules/onnxruntime-node ]; then
		echo "setup: installing onnxruntime-node into tests/node"
		(cd tests/node && npm ci --ignore-scripts --no-audit --no-fund)
	fi
else
	echo "setup: no npm: the ONNX Runtime tests will SKIP (apt-get install nodejs npm)"
fi
