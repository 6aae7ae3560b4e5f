/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - what the harnesses in fuzz/ share: splitting one input into the
 * files it stands for, and a private temporary folder to put them in.
 *
 * Each harness NAME.c defines the two libFuzzer entry points
 *
 *	int LLVMFuzzerInitialize(int *argc, char ***argv);	once, before any input
 *	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
 *
 * and is linked either with libFuzzer (-fsanitize=fuzzer: the fuzz build,
 * configure --enable-fuzz) or with fuzz/replay.c, a plain main() that feeds
 * it the files named on its command line (make check replays the corpora
 * and fuzz/regress/ that way, with any compiler). docs/fuzzing.md says more.
 *
 * An input may stand for several files (images and labels; a pipeline and
 * its --set overrides): the parts are separated by FZ_SEP, a line "@@@@"
 * ('@' cannot start a YAML scalar, so the separator never reads as part of
 * a pipeline). Files go to one folder per process, made with mkdtemp under
 * $TMPDIR (default /tmp) and removed, with what is in it, at exit; a
 * harness writes nowhere else.
 */
#ifndef MCOMP_FUZZ_H
#define MCOMP_FUZZ_H

/* memmem; include this header first */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/common.h>

#define FZ_SEP	   "\n@@@@\n"
#define FZ_SEP_LEN 6

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_part {
	const uint8_t *p;
	size_t n;
};

/* Splits data at each FZ_SEP into at most max parts (the last one takes the
 * rest, separators included); returns how many. */
static inline int fz_split(const uint8_t *data, size_t size, struct fz_part *parts, int max)
{
	int k = 0;

	while (k < max - 1) {
		const uint8_t *s = memmem(data, size, FZ_SEP, FZ_SEP_LEN);

		if (!s)
			break;
		parts[k].p = data;
		parts[k].n = (size_t)(s - data);
		k++;
		size -= (size_t)(s - data) + FZ_SEP_LEN;
		data = s + FZ_SEP_LEN;
	}
	parts[k].p = data;
	parts[k].n = size;
	return k + 1;
}

static char fz_dir_path[4096];

/* Removes the folder and the files in it (the harnesses make no subfolders
 * but those fz_mkdir names, which are emptied the same way). */
static void fz_rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char sub[4096 + 256];

	if (d) {
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			if (e->d_type == DT_DIR)
				fz_rm_tree(sub);
			else
				unlink(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

static void fz_cleanup(void)
{
	if (fz_dir_path[0])
		fz_rm_tree(fz_dir_path);
}

/* The process's temporary folder, made on first use; exits when it cannot be
 * made (a harness without it can do nothing). */
static inline const char *fz_dir(void)
{
	const char *tmp;

	if (fz_dir_path[0])
		return fz_dir_path;
	tmp = getenv("TMPDIR");
	snprintf(fz_dir_path, sizeof(fz_dir_path), "%s/mcomp-fuzz-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fz_dir_path)) {
		perror(fz_dir_path);
		exit(1);
	}
	atexit(fz_cleanup);
	return fz_dir_path;
}

/* path (of size n) = the folder's file name; the folders above it are made. */
static inline void fz_path(char *path, size_t n, const char *name)
{
	snprintf(path, n, "%s/%s", fz_dir(), name);
	for (char *s = path + strlen(fz_dir()) + 1; (s = strchr(s, '/')); s++) {
		*s = 0;
		mkdir(path, 0700);
		*s = '/';
	}
}

/* Writes p[0..n) as the folder's file name (replacing it); its path into
 * path[size]. Exits on a write error (a full disk is no finding). */
static inline void fz_write(char *path, size_t size, const char *name, const void *p, size_t n)
{
	int fd;

	fz_path(path, size, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n) || close(fd)) {
		perror(path);
		exit(1);
	}
}

/* A NUL-terminated copy of p[0..n) (the caller frees it). */
static inline char *fz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

/* Set (to 1) by fuzz/replay.c; absent (weak, NULL) under libFuzzer. */
extern int fz_replaying __attribute__((weak));

static inline int fz_verbose(void)
{
	static int verbose = -1;

	if (verbose < 0)
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	return verbose;
}

/* A call that failed with err: with FUZZ_VERBOSE set, says so on stderr (to
 * see what a corpus reaches). A failure without a code or a message is a
 * finding: the library must say what it refused. So is running out of
 * memory: no input a fuzzer makes needs a gigabyte, so mcomp asked for what
 * the input only claimed (fuzz/replay.c limits the memory to see it; under
 * libFuzzer, -malloc_limit_mb stops the run first). A pipeline's errors come
 * back as MC_EINVAL, each with its place, so a replay also looks for "out of
 * memory" in the message; never under libFuzzer, which would learn the
 * string from strstr and write it into the input, to be echoed back. */
static inline void fz_refused(const char *what, const struct mc_err *err)
{
	if (fz_verbose())
		fprintf(stderr, "  %s: %s\n", what, err->msg);
	if (!err->code || !err->msg[0]) {
		fprintf(stderr, "%s: failed (code %d) without a message\n", what, err->code);
		abort();
	}
	if (err->code == MC_ENOMEM ||
	    (&fz_replaying && fz_replaying && strstr(err->msg, "out of memory"))) {
		fprintf(stderr, "%s: a small input made mcomp run out of memory: %s\n", what,
			err->msg);
		abort();
	}
}

/* A call that succeeded, for FUZZ_VERBOSE. */
static inline void fz_accepted(const char *what)
{
	if (fz_verbose())
		fprintf(stderr, "  %s: ok\n", what);
}

/* Reading standard input would stall a harness (a pipeline may name
 * /dev/stdin): it reads /dev/null instead. */
static inline void fz_no_stdin(void)
{
	int fd = open("/dev/null", O_RDONLY);

	if (fd >= 0 && fd != 0) {
		dup2(fd, 0);
		close(fd);
	}
}

#endif
