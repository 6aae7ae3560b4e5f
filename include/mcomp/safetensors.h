/* SPDX-License-Identifier: MIT */
/*
 * mcomp/safetensors.h - reading and writing safetensors files.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value"}}, then the data section. Offsets are
 * relative to the data section. The reader trusts nothing: every length,
 * offset, shape and dtype is checked (overflow included), the tensors must
 * cover the data section exactly, without overlap or holes.
 */
#ifndef MCOMP_SAFETENSORS_H
#define MCOMP_SAFETENSORS_H

#include <mcomp/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mc_st_entry {
	char *name;
	char st_dtype[8];   /* as in the file: "F32", "I8", "BF16", ... */
	int dtype;	    /* enum mc_dtype, or -1 when mcomp has no such dtype */
	int ndim;
	int64_t shape[MC_MAX_DIMS];
	const void *data;   /* into the file's buffer; valid until mc_st_free */
	size_t nbytes;
};

struct mc_st_file {
	char *path;
	int n;
	struct mc_st_entry *entries; /* in data-offset order */
	int n_meta;
	char **meta_keys, **meta_vals;
	void *buf; /* whole file */
	size_t len;
};

/* Reads and checks the file, decoding it first when it is a zstd frame
 * (known by its magic number, whatever the name). NULL with err (MC_EIO,
 * MC_ECORRUPT; MC_ENOMEM over the memory limit) naming the file and what is
 * wrong. */
MC_API struct mc_st_file *mc_st_read(const char *path, struct mc_err *err);
/* The same over a buffer the function takes ownership of (freed on failure
 * too); name is used in messages. */
MC_API struct mc_st_file *mc_st_parse(void *buf, size_t len, const char *name,
				      struct mc_err *err);
MC_API void mc_st_free(struct mc_st_file *f);
MC_API const struct mc_st_entry *mc_st_find(const struct mc_st_file *f, const char *name);
/* The metadata value of key, or NULL. */
MC_API const char *mc_st_meta(const struct mc_st_file *f, const char *key);

/*
 * Serializes n tensors (in the given order) and the metadata pairs
 * meta[0..2*n_meta) (key, value, key, value, ...) into a malloc'd buffer.
 * Q4 tensors are stored as U8 of ceil(numel/2) bytes with shape [bytes].
 */
MC_API int mc_st_serialize(struct mc_tensor *const *t, int n, const char *const *meta, int n_meta,
			   void **buf, size_t *len, struct mc_err *err);
/* Writes buf to path atomically: a temporary file beside it, fsync, rename.
 * Folders above path that do not exist yet are created. Only a regular file
 * is replaced: MC_EIO, saying what it is, when path names a symbolic link, a
 * device, a FIFO, a socket or a folder, also one that appears there before
 * the rename (docs/security.md). */
MC_API int mc_write_file_atomic(const char *path, const void *buf, size_t len,
				struct mc_err *err);
/* Reads a whole file into a malloc'd buffer (limit: refuse larger files). */
MC_API int mc_read_file(const char *path, size_t limit, void **buf, size_t *len,
			struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
