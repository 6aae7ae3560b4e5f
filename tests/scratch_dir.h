/* SPDX-License-Identifier: MIT */
/*
 * scratch_dir.h - a scratch folder per test, for the file-format suites
 * (check_idx, check_model_io, check_safetensors): made by scratch_make()
 * in a fixture's setup, removed with everything in it by scratch_remove().
 * Included by one test program each, so its functions are static.
 */
#ifndef MCOMP_TESTS_SCRATCH_DIR_H
#define MCOMP_TESTS_SCRATCH_DIR_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char tmpdir[64];

/* Makes $TMPDIR/mc-WHAT-XXXXXX (or under /tmp). */
static void scratch_make(const char *what)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	snprintf(tmpdir, sizeof(tmpdir), "%.40s/mc-%s-XXXXXX", base, what);
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* Tests may leave read-only folders behind: make each writable first. */
static int scratch_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	chmod(p, 0700);
	return remove(p);
}

static void scratch_remove(void)
{
	nftw(tmpdir, scratch_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* TMPDIR/name, in one of four rotating buffers. */
static char *tpath(const char *name)
{
	static char buf[4][256];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, name);
	return buf[k];
}

#endif
