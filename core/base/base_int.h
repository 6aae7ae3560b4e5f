/* SPDX-License-Identifier: MIT */
/*
 * base_int.h - what the base layer offers the layers above beyond the
 * public headers. Not installed.
 */
#ifndef MCOMP_BASE_INT_H
#define MCOMP_BASE_INT_H

#include <sys/stat.h>
#include <time.h>

#include <mcomp/tensor.h>

/* A tensor with a shape and no data (data NULL): the parameters of a model
 * of shapes only. NULL with err set, as mc_tensor_new. */
struct mc_tensor *mc_tensor_new_shape(const char *name, enum mc_dtype dtype, int ndim,
				      const int64_t *shape, struct mc_err *err);
/* Gives a tensor without data its zeroed data. 0, or MC_ENOMEM with err set. */
int mc_tensor_alloc(struct mc_tensor *t, struct mc_err *err);

/*
 * Files mcomp writes (fileio.c). A staged file is written in full to a
 * locked temporary file beside its target ("DIR/.BASE.XXXXXX") and flushed
 * (mc_stage_write), then put in place (mc_stage_commit) or removed
 * (mc_stage_discard), so that several files can be written first and
 * committed together. mc_write_file_atomic is the two in one.
 */
struct mc_stage {
	char *path; /* the target */
	char *tmp;  /* the temporary file; NULL when none */
	int fd;	    /* open (and locked) until commit or discard */
};
/* 0, or an error (the target is not a regular file or absent, a folder
 * cannot be made, the disk is full) with nothing left behind. */
int mc_stage_write(struct mc_stage *s, const char *path, const void *buf, size_t len,
		   struct mc_err *err);
/* 0, or an error (the target became something other than a regular file,
 * the rename failed) with the temporary file removed. Either way s is
 * released. */
int mc_stage_commit(struct mc_stage *s, struct mc_err *err);
/* Removes the temporary file (if any) and releases s. */
void mc_stage_discard(struct mc_stage *s);

/*
 * What path names, without following a symbolic link: 0 when nothing, 1 for
 * a regular file (st filled when not NULL), else MC_EIO with a message that
 * says what it is ("PATH: is a FIFO (named pipe); ...").
 */
int mc_output_target_ok(const char *path, struct stat *st, struct mc_err *err);
/* "a regular file", "a symbolic link", "a character device", ... */
const char *mc_file_kind(mode_t mode);
/* Removes path if it is a regular file (0 also when absent); never
 * anything else (MC_EIO, as mc_output_target_ok). */
int mc_remove_regular(const char *path, struct mc_err *err);
/*
 * Removes the temporary files that an earlier, killed writer of path left
 * beside it: ".BASE.XXXXXX" with mkstemp's six letters and digits, a
 * regular file owned by this user, last changed before since, and not
 * locked by a live process. note(arg, file) is told each one removed.
 * Returns how many.
 */
int mc_sweep_stale_temps(const char *path, const struct timespec *since,
			 void (*note)(void *arg, const char *tmp), void *arg);

/*
 * zstd-coded files (zfile.c). A file whose name ends in ".zst" is written
 * as one zstd frame at MC_ZSTD_LEVEL (content size and checksum in the
 * frame, one thread); any file starting with the frame's magic number is
 * decoded when read, whatever its name (docs/pipelines.md, "output").
 */
#define MC_ZSTD_LEVEL 9
#define MC_ZSTD_LEVEL_MAX 22
/* Whether path ends in ".zst". */
int mc_zst_path(const char *path);
/* Whether buf starts with the zstd frame magic number. */
int mc_zst_is_frame(const void *buf, size_t len);
/* buf coded as one frame at level (1..MC_ZSTD_LEVEL_MAX; 0: MC_ZSTD_LEVEL)
 * into a malloc'd *out. 0, or MC_ENOMEM. */
int mc_zst_encode(const void *buf, size_t len, int level, void **out, size_t *out_len,
		  struct mc_err *err);
/*
 * Decodes the one zstd frame that buf[0..len) must be (named name in
 * messages) into a malloc'd *out of at most limit bytes, within the memory
 * limit. MC_ECORRUPT for a truncated or corrupt frame, data after it, or
 * content over limit; MC_ENOMEM over the memory limit.
 */
int mc_zst_decode(const void *buf, size_t len, const char *name, size_t limit, void **out,
		  size_t *out_len, struct mc_err *err);
/* mc_read_file, then decoded (limit applies to both) when the file is a zstd
 * frame. disk_len (may be NULL): the bytes of the file itself. */
int mc_read_file_decoded(const char *path, size_t limit, void **buf, size_t *len,
			 size_t *disk_len, struct mc_err *err);
/* The first n bytes of the file's content (decoded when it is a zstd frame)
 * into dst; *got of them (fewer at the end, or where the frame is bad).
 * 0, or -1 when the file does not open. For peeking only: a reader of the
 * whole file reports what is wrong with it. */
int mc_read_head(const char *path, void *dst, size_t n, size_t *got);
/* What to write to path: buf itself (*own NULL), or when path ends in ".zst"
 * buf coded at level (as mc_zst_encode), in *own, which the caller frees.
 * 0, or MC_ENOMEM. */
int mc_zst_for_path(const char *path, int level, const void *buf, size_t len, const void **out,
		    size_t *out_len, void **own, struct mc_err *err);
/* mc_write_file_atomic of what mc_zst_for_path gives (at MC_ZSTD_LEVEL). */
int mc_write_file_coded(const char *path, const void *buf, size_t len, struct mc_err *err);

#endif
