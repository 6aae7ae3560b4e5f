// SPDX-License-Identifier: MIT
/*
 * check_fileio.c - the writer of every file mcomp writes (core/base/fileio.c):
 * only a regular file is ever replaced, never a link, a device, a FIFO or a
 * socket, neither when it is there at the start nor when it appears between
 * the check and the rename; temporary files are locked while they live, and
 * the sweep removes only the stale ones of the writer's own pattern.
 */
#define _GNU_SOURCE /* nftw, utimensat */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mcomp/safetensors.h>

#include "base/base_int.h"
#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("fileio");
}

static void teardown(void)
{
	scratch_remove();
}

static void expect_content(const char *path, const char *want)
{
	char buf[256] = "";
	FILE *f = fopen(path, "rb");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	ck_assert_str_eq(buf, want);
}

/* Files in the scratch folder whose name starts with '.' (temporary ones). */
static int count_hidden(void)
{
	char cmd[512];
	int n = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | grep -c '^\\.'", tmpdir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

START_TEST(test_refuses_what_is_not_a_file)
{
	struct mc_err err = {0};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	/* A character device: /dev/null is never replaced (by root neither). */
	ck_assert_int_eq(mc_write_file_atomic("/dev/null", "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "/dev/null: is a character device"));
	ck_assert_int_eq(stat("/dev/null", &st), 0);
	ck_assert(S_ISCHR(st.st_mode));

	ck_assert_int_eq(mkfifo(tpath("fifo"), 0600), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("fifo"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "fifo: is a FIFO (named pipe)"));
	ck_assert_int_eq(lstat(tpath("fifo"), &st), 0);
	ck_assert(S_ISFIFO(st.st_mode));

	/* A link is not followed, whether it points at a file or nowhere. */
	ck_assert_int_eq(mc_write_file_atomic(tpath("target"), "keep", 4, &err), 0);
	ck_assert_int_eq(symlink("target", tpath("link")), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("link"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "link: is a symbolic link"));
	expect_content(tpath("target"), "keep");
	ck_assert_int_eq(symlink("/nonexistent/x", tpath("dangling")), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("dangling"), "x", 1, &err), MC_EIO);
	ck_assert_int_eq(lstat(tpath("dangling"), &st), 0);
	ck_assert(S_ISLNK(st.st_mode));

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", tpath("sock"));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("sock"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "sock: is a socket"));
	close(fd);

	ck_assert_int_eq(mc_write_file_atomic(tpath("dir/"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "names a folder"));
	ck_assert_int_eq(count_hidden(), 0);
}
END_TEST

/* The target changes between the check and the rename: what appeared stays. */
START_TEST(test_target_changes_before_the_rename)
{
	struct mc_err err = {0};
	struct mc_stage s;
	struct stat st;

	/* Absent when staged, a FIFO by the rename. */
	ck_assert_int_eq(mc_stage_write(&s, tpath("a"), "new", 3, &err), 0);
	ck_assert_int_eq(mkfifo(tpath("a"), 0600), 0);
	ck_assert_int_eq(mc_stage_commit(&s, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a FIFO"));
	ck_assert_int_eq(lstat(tpath("a"), &st), 0);
	ck_assert(S_ISFIFO(st.st_mode));

	/* A regular file when staged, a link by the rename. */
	ck_assert_int_eq(mc_write_file_atomic(tpath("b"), "old", 3, &err), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("t"), "target", 6, &err), 0);
	ck_assert_int_eq(mc_stage_write(&s, tpath("b"), "new", 3, &err), 0);
	ck_assert_int_eq(unlink(tpath("b")), 0);
	ck_assert_int_eq(symlink("t", tpath("b")), 0);
	ck_assert_int_eq(mc_stage_commit(&s, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a symbolic link"));
	ck_assert_int_eq(lstat(tpath("b"), &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
	expect_content(tpath("t"), "target");

	/* A regular file replaced by another regular file: replaced. */
	ck_assert_int_eq(mc_stage_write(&s, tpath("t"), "newer", 5, &err), 0);
	ck_assert_int_eq(mc_stage_commit(&s, &err), 0);
	expect_content(tpath("t"), "newer");

	/* Discarded: the target as it was. */
	ck_assert_int_eq(mc_stage_write(&s, tpath("t"), "never", 5, &err), 0);
	mc_stage_discard(&s);
	expect_content(tpath("t"), "newer");
	ck_assert_int_eq(count_hidden(), 0);
}
END_TEST

/* A staged file is locked until it is committed or discarded. */
START_TEST(test_temporary_file_is_locked)
{
	struct mc_err err = {0};
	struct mc_stage s;
	int fd;

	ck_assert_int_eq(mc_stage_write(&s, tpath("m"), "bytes", 5, &err), 0);
	fd = open(s.tmp, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), -1);
	ck_assert_int_eq(errno, EWOULDBLOCK);
	close(fd);
	ck_assert_int_eq(mc_stage_commit(&s, &err), 0);
	expect_content(tpath("m"), "bytes");
}
END_TEST

static int removed;
static void note(void *arg, const char *tmp)
{
	(void)arg;
	(void)tmp;
	removed++;
}

static void make_file(const char *path, time_t age)
{
	struct timespec ts[2];

	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	fputs("torn", f);
	fclose(f);
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= age;
	ts[1] = ts[0];
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

START_TEST(test_sweep_removes_only_stale_temporaries)
{
	struct timespec now;
	struct mc_stage s;
	struct mc_err err = {0};
	char live[512];

	make_file(tpath(".m.bin.Ab12Cd"), 60); /* stale: removed */
	make_file(tpath(".m.bin.Ab12C"), 60);  /* five letters: not the pattern */
	make_file(tpath(".m.bin.Ab-2Cd"), 60); /* '-': not the pattern */
	make_file(tpath(".n.bin.Ab12Cd"), 60); /* another output's */
	make_file(tpath("m.bin.Ab12Cd"), 60);  /* not hidden */
	ck_assert_int_eq(mkdir(tpath(".m.bin.Dir123"), 0700), 0); /* not a file */
	ck_assert_int_eq(symlink("x", tpath(".m.bin.Lnk123")), 0);
	/* A live writer's file: locked. */
	ck_assert_int_eq(mc_stage_write(&s, tpath("m.bin"), "live", 4, &err), 0);
	snprintf(live, sizeof(live), "%s", s.tmp);
	/* A file younger than the sweep's start is left alone even unlocked. */
	clock_gettime(CLOCK_REALTIME, &now);
	now.tv_sec -= 30;
	make_file(tpath(".m.bin.Young1"), 10);
	removed = 0;
	ck_assert_int_eq(mc_sweep_stale_temps(tpath("m.bin"), &now, note, NULL), 1);
	ck_assert_int_eq(removed, 1);
	ck_assert_int_eq(access(tpath(".m.bin.Ab12Cd"), F_OK), -1);
	ck_assert_int_eq(access(tpath(".m.bin.Ab12C"), F_OK), 0);
	ck_assert_int_eq(access(tpath(".m.bin.Ab-2Cd"), F_OK), 0);
	ck_assert_int_eq(access(tpath(".n.bin.Ab12Cd"), F_OK), 0);
	ck_assert_int_eq(access(tpath("m.bin.Ab12Cd"), F_OK), 0);
	ck_assert_int_eq(access(tpath(".m.bin.Dir123"), F_OK), 0);
	ck_assert_int_eq(access(tpath(".m.bin.Young1"), F_OK), 0);
	ck_assert_int_eq(access(live, F_OK), 0);
	/* The live one, once its writer is gone (unlocked) and the sweep later. */
	ck_assert_int_eq(close(s.fd), 0); /* the writer dies: its lock goes */
	s.fd = -1;
	free(s.tmp);
	free(s.path);
	clock_gettime(CLOCK_REALTIME, &now);
	now.tv_sec += 1;
	ck_assert_int_eq(mc_sweep_stale_temps(tpath("m.bin"), &now, note, NULL), 2);
	ck_assert_int_eq(access(live, F_OK), -1);
	ck_assert_int_eq(access(tpath(".m.bin.Young1"), F_OK), -1);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("fileio");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_refuses_what_is_not_a_file);
	tcase_add_test(tc, test_target_changes_before_the_rename);
	tcase_add_test(tc, test_temporary_file_is_locked);
	tcase_add_test(tc, test_sweep_removes_only_stale_temporaries);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
