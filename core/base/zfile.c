// SPDX-License-Identifier: MIT
/*
 * zfile.c - model and cascade files coded with zstd (libzstd).
 *
 * Writing: a file whose name ends in ".zst" is written as one zstd frame,
 * coded by libzstd in a single thread at MC_ZSTD_LEVEL, with the content
 * size in the frame header and a checksum of the content at its end. One
 * call over the whole buffer, no worker threads: the same bytes in give the
 * same frame out, whatever OMP_NUM_THREADS says (for one libzstd release;
 * another release may code differently, the content stays the same).
 *
 * Reading: a file is known as zstd by its first four bytes (the frame magic
 * number), never by its name, and decoded before it is parsed. The frame is
 * untrusted input like any file: its extent is walked first (a frame cut
 * short, or bytes after it, are refused before anything is decoded), the
 * size it declares is checked against the caller's limit and the memory
 * limit (mc_mem_check) before the content is allocated, a frame without a
 * declared size is decoded in steps that stop at the same limits, and the
 * checksum is verified. docs/security.md lists these checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>
#include <zstd_errors.h>

#include <mcomp/safetensors.h>

#include "base/base_int.h"
#include "base/limits.h"

/* Bytes of content decoded per step for a frame that does not declare its size. */
#define STEP ((size_t)1 << 20)
/*
 * Frames of more than BOMB_MIN bytes of content may hold at most BOMB_RATIO
 * times the frame's size. Model files code 1.1 to 1.4 times (f32, int8,
 * pruned; docs/pipelines.md), streams of cluster indices a few times more;
 * a few KiB declaring gigabytes of zeros is a bomb, refused before it costs
 * its size in memory and time (as gzip'd data sets are, docs/security.md).
 */
#define BOMB_MIN   ((size_t)16 << 20)
#define BOMB_RATIO 64

/* The refusal of a frame whose content would pass BOMB_RATIO times its size. */
static int bomb(const char *name, size_t len, unsigned long long size, struct mc_err *err)
{
	return mc_err_set(
	    err, MC_ECORRUPT,
	    "%s: zstd frame of %zu bytes %s %llu bytes of content, more than %d "
	    "times its size: it looks like a zstd bomb; if the model is real, "
	    "decode it with `zstd -d` and give mcomp the plain file",
	    name, len, size == ZSTD_CONTENTSIZE_UNKNOWN ? "decodes to more than" : "declares",
	    size == ZSTD_CONTENTSIZE_UNKNOWN ? (unsigned long long)len * BOMB_RATIO : size,
	    BOMB_RATIO);
}

int mc_zst_path(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return n > 4 && !strcmp(path + n - 4, ".zst");
}

int mc_zst_is_frame(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	/* ZSTD_MAGICNUMBER, little-endian */
	return len >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd;
}

int mc_zst_encode(const void *buf, size_t len, int level, void **out, size_t *out_len,
		  struct mc_err *err)
{
	size_t cap = ZSTD_compressBound(len), r;
	ZSTD_CCtx *cc;
	void *dst;

	*out = NULL;
	*out_len = 0;
	if (ZSTD_isError(cap) || !cap)
		return mc_err_set(err, MC_ENOMEM,
				  "zstd: %zu bytes are too many to code in one frame", len);
	dst = malloc(cap);
	cc = ZSTD_createCCtx();
	if (!dst || !cc) {
		free(dst);
		ZSTD_freeCCtx(cc);
		return mc_err_set(err, MC_ENOMEM, "zstd: out of memory coding %zu bytes", len);
	}
	/* nbWorkers 0: libzstd's own worker threads would code in jobs, a
	 * format of their own; one call in this thread codes the same bytes
	 * whatever the machine and OMP_NUM_THREADS. */
	r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level ? level : MC_ZSTD_LEVEL);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_nbWorkers, 0);
	if (!ZSTD_isError(r))
		r = ZSTD_compress2(cc, dst, cap, buf, len);
	ZSTD_freeCCtx(cc);
	if (ZSTD_isError(r)) {
		free(dst);
		return mc_err_set(err, MC_ENOMEM, "zstd: coding %zu bytes failed: %s", len,
				  ZSTD_getErrorName(r));
	}
	*out = dst;
	*out_len = r;
	return 0;
}

/* The refusal of a frame whose extent or content is wrong (r: libzstd's error). */
static int frame_error(const char *name, size_t len, size_t r, struct mc_err *err)
{
	if (ZSTD_getErrorCode(r) == ZSTD_error_srcSize_wrong)
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: zstd frame is truncated (the file ends after %zu bytes, "
		    "inside the frame): it was cut short, e.g. by an interrupted copy "
		    "or download; copy it again, or write it again with mcomp (which "
		    "writes a file whole or not at all)",
		    name, len);
	return mc_err_set(err, MC_ECORRUPT,
			  "%s: zstd frame is corrupt (%s): the file was damaged or was not "
			  "written by zstd; copy it again, or check it with `zstd -t %s`",
			  name, ZSTD_getErrorName(r), name);
}

/* Decodes a frame that does not declare its size, at most cap bytes, in steps. */
static int decode_steps(const void *buf, size_t len, const char *name, size_t cap, void **out,
			size_t *out_len, struct mc_err *err)
{
	ZSTD_DStream *ds = ZSTD_createDStream();
	ZSTD_inBuffer in = {buf, len, 0};
	ZSTD_outBuffer o = {NULL, 0, 0};
	char what[96];
	size_t r = 1;
	int ret;

	if (!ds)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory decoding the zstd frame",
				  name);
	while (r) {
		if (o.pos == o.size) {
			size_t grow = o.size ? o.size : STEP;
			void *p;

			if (o.size >= BOMB_MIN && o.size / len >= BOMB_RATIO) {
				ret = bomb(name, len, ZSTD_CONTENTSIZE_UNKNOWN, err);
				goto out;
			}
			if (o.size >= cap) {
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: zstd frame (without a declared size) decodes "
						 "to more than %zu bytes, the most this file may "
						 "hold",
						 name, cap);
				goto out;
			}
			if (grow > cap - o.size)
				grow = cap - o.size;
			snprintf(what, sizeof(what),
				 "decoding its zstd frame (no size declared; %zu bytes so far)",
				 o.pos);
			if (mc_mem_check(o.size + grow + len, what, err)) {
				ret = mc_err_prefix(err, "%s", name);
				goto out;
			}
			p = realloc(o.dst, o.size + grow);
			if (!p) {
				ret = mc_err_set(err, MC_ENOMEM,
						 "%s: out of memory decoding the zstd frame "
						 "(%zu bytes)",
						 name, o.size + grow);
				goto out;
			}
			o.dst = p;
			o.size += grow;
		}
		r = ZSTD_decompressStream(ds, &o, &in);
		if (ZSTD_isError(r)) {
			ret = frame_error(name, len, r, err);
			goto out;
		}
		if (r && in.pos == in.size && o.pos < o.size) {
			/* Wants more input, and there is none. */
			ret = frame_error(name, len, (size_t)-ZSTD_error_srcSize_wrong, err);
			goto out;
		}
	}
	ZSTD_freeDStream(ds);
	*out = o.dst ? o.dst : malloc(1);
	*out_len = o.pos;
	return *out ? 0 : mc_err_set(err, MC_ENOMEM, "%s: out of memory", name);
out:
	free(o.dst);
	ZSTD_freeDStream(ds);
	return ret;
}

int mc_zst_decode(const void *buf, size_t len, const char *name, size_t limit, void **out,
		  size_t *out_len, struct mc_err *err)
{
	unsigned long long size;
	size_t flen, r;
	char what[64], lim[32];
	void *dst;

	*out = NULL;
	*out_len = 0;
	/* The frame's extent first: a truncated frame or data after it is
	 * refused before anything is allocated for the content. */
	flen = ZSTD_findFrameCompressedSize(buf, len);
	if (ZSTD_isError(flen))
		return frame_error(name, len, flen, err);
	if (flen < len)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: %zu bytes of trailing data after the zstd frame (which ends "
				  "at byte %zu): mcomp writes one frame per file, so the file was "
				  "appended to or joined with another; copy it again, or cut it "
				  "to its first %zu bytes",
				  name, len - flen, flen, flen);
	size = ZSTD_getFrameContentSize(buf, len);
	if (size == ZSTD_CONTENTSIZE_ERROR)
		return frame_error(name, len, (size_t)-ZSTD_error_corruption_detected, err);
	if (size == ZSTD_CONTENTSIZE_UNKNOWN)
		return decode_steps(buf, len, name, limit, out, out_len, err);
	if (size > limit)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: zstd frame declares %llu bytes of content, more than the "
				  "limit of %zu bytes (%s) for this file",
				  name, size, limit, mc_mem_text(limit, lim, sizeof(lim)));
	if (size > BOMB_MIN && size / len >= BOMB_RATIO)
		return bomb(name, len, size, err);
	snprintf(what, sizeof(what), "decoding its zstd frame (%llu bytes)", size);
	if (mc_mem_check((uint64_t)size + len, what, err))
		return mc_err_prefix(err, "%s", name);
	dst = malloc(size ? (size_t)size : 1);
	if (!dst)
		return mc_err_set(err, MC_ENOMEM,
				  "%s: out of memory decoding the zstd frame (%llu bytes)", name,
				  size);
	r = ZSTD_decompress(dst, (size_t)size, buf, len);
	if (ZSTD_isError(r) || r != size) {
		free(dst);
		if (!ZSTD_isError(r))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: zstd frame is corrupt: it declares %llu bytes and "
					  "decodes to %zu; copy the file again",
					  name, size, r);
		return frame_error(name, len, r, err);
	}
	*out = dst;
	*out_len = (size_t)size;
	return 0;
}

int mc_read_file_decoded(const char *path, size_t limit, void **buf, size_t *len, size_t *disk_len,
			 struct mc_err *err)
{
	void *raw, *dec;
	size_t n, dn;
	int ret;

	ret = mc_read_file(path, limit, &raw, &n, err);
	if (ret)
		return ret;
	if (disk_len)
		*disk_len = n;
	if (!mc_zst_is_frame(raw, n)) {
		*buf = raw;
		*len = n;
		return 0;
	}
	ret = mc_zst_decode(raw, n, path, limit, &dec, &dn, err);
	free(raw);
	if (ret) {
		*buf = NULL;
		*len = 0;
		return ret;
	}
	*buf = dec;
	*len = dn;
	return 0;
}

int mc_read_head(const char *path, void *dst, size_t n, size_t *got)
{
	unsigned char in[1 << 16];
	ZSTD_inBuffer ib = {in, 0, 0};
	ZSTD_outBuffer ob = {dst, n, 0};
	ZSTD_DStream *ds = NULL;
	size_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*got = 0;
	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t k;

		if (ib.pos == ib.size) {
			k = read(fd, in, sizeof(in));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			ib.size = (size_t)k;
			ib.pos = 0;
		}
		if (!ds && ob.pos == 0 && ib.size >= 4 && mc_zst_is_frame(in, ib.size)) {
			ds = ZSTD_createDStream();
			if (!ds)
				break;
		}
		if (!ds) {
			size_t c = ib.size - ib.pos < n - ob.pos ? ib.size - ib.pos : n - ob.pos;

			memcpy((unsigned char *)dst + ob.pos, in + ib.pos, c);
			ob.pos += c;
			ib.pos += c;
		} else {
			r = ZSTD_decompressStream(ds, &ob, &ib);
			if (ZSTD_isError(r) || !r)
				break;
		}
		if (ob.pos == n)
			break;
	}
	ZSTD_freeDStream(ds);
	close(fd);
	*got = ob.pos;
	return 0;
}

int mc_zst_for_path(const char *path, int level, const void *buf, size_t len, const void **out,
		    size_t *out_len, void **own, struct mc_err *err)
{
	int ret;

	*own = NULL;
	*out = buf;
	*out_len = len;
	if (!mc_zst_path(path))
		return 0;
	ret = mc_zst_encode(buf, len, level, own, out_len, err);
	if (ret)
		return mc_err_prefix(err, "%s", path);
	*out = *own;
	return 0;
}

int mc_write_file_coded(const char *path, const void *buf, size_t len, struct mc_err *err)
{
	const void *data;
	size_t n;
	void *own;
	int ret;

	ret = mc_zst_for_path(path, 0, buf, len, &data, &n, &own, err);
	if (!ret)
		ret = mc_write_file_atomic(path, data, n, err);
	free(own);
	return ret;
}
