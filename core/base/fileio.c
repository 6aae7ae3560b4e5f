// SPDX-License-Identifier: MIT
/*
 * fileio.c - whole-file reads with a size limit, and atomic writes.
 *
 * An output file is written to a temporary file beside the target (same
 * folder, so rename(2) cannot cross file systems), flushed to disk and
 * renamed over the target. A failure at any step removes the temporary file
 * and leaves the previous target untouched.
 *
 * Only a regular file is ever replaced: a target that is a symbolic link, a
 * device, a FIFO, a socket or a folder is refused (never followed, never
 * renamed over), at the start and again at the rename. The temporary file
 * ("DIR/.BASE.XXXXXX") is locked with flock(2) for as long as it exists, so
 * that a later run can tell one left by a killed process (unlocked) from one
 * another process is writing (mc_sweep_stale_temps).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* renameat2, mkostemp */
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/safetensors.h>

#include "base/base_int.h"

MC_API int mc_read_file(const char *path, size_t limit, void **buf, size_t *len, struct mc_err *err)
{
	struct stat st;
	unsigned char *p = NULL, *np;
	size_t cap, lim1, n = 0;
	int fd, ret;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot stat: %s", path, strerror(errno));
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = mc_err_set(err, MC_EIO, "%s: is a directory; give the path of a file", path);
		goto out_close;
	}
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > limit) {
		ret = mc_err_set(err, MC_EIO, "%s: file is %jd bytes, more than the limit of %zu",
				 path, (intmax_t)st.st_size, limit);
		goto out_close;
	}
	/* The size from fstat is a hint only: the file may change under us, or
	 * be a pipe. Read to end of file, never past the limit. */
	lim1 = limit < SIZE_MAX ? limit + 1 : limit;
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
	if (cap > lim1)
		cap = lim1;
	p = malloc(cap ? cap : 1);
	if (!p) {
		ret = mc_err_set(err, MC_ENOMEM, "%s: out of memory reading %zu bytes", path, cap);
		goto out_close;
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			size_t ncap;

			if (cap >= lim1)
				break;
			ncap = cap > lim1 / 2 ? lim1 : cap * 2;
			np = realloc(p, ncap);
			if (!np) {
				ret = mc_err_set(err, MC_ENOMEM,
						 "%s: out of memory reading %zu bytes", path, ncap);
				goto out_free;
			}
			p = np;
			cap = ncap;
		}
		r = read(fd, p + n, cap - n > (1u << 30) ? (1u << 30) : cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			ret = mc_err_set(err, MC_EIO, "%s: read failed: %s", path, strerror(errno));
			goto out_free;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > limit) {
		ret = mc_err_set(err, MC_EIO, "%s: file is more than the limit of %zu bytes", path,
				 limit);
		goto out_free;
	}
	close(fd);
	*buf = p;
	*len = n;
	return 0;

out_free:
	free(p);
out_close:
	close(fd);
	return ret;
}

/* The permissions a newly created file would get: 0666 less the umask.
 * umask(2) cannot be read without being set (racy in a library), so read it
 * from /proc; fall back to the common 022. */
static mode_t new_file_mode(void)
{
	unsigned int mask = 022;
	char line[128];
	FILE *f = fopen("/proc/self/status", "re");

	if (f) {
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "Umask: %o", &mask) == 1)
				break;
		}
		fclose(f);
	}
	return 0666 & ~(mode_t)mask;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Creates the folders above path that do not exist yet (like mkdir -p). */
static int mkdir_parents(const char *path, struct mc_err *err)
{
	char buf[4096];
	char *s;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return mc_err_set(err, MC_EIO, "%s: path too long", path);
	for (s = buf + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		if (mkdir(buf, 0777) && errno != EEXIST)
			return mc_err_set(err, MC_EIO, "%s: cannot create folder %s: %s", path, buf,
					  strerror(errno));
		*s = '/';
	}
	return 0;
}

const char *mc_file_kind(mode_t mode)
{
	if (S_ISREG(mode))
		return "a regular file";
	if (S_ISDIR(mode))
		return "a folder";
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISFIFO(mode))
		return "a FIFO (named pipe)";
	if (S_ISSOCK(mode))
		return "a socket";
	return "not a regular file";
}

/* The refusal of a target st that is not a regular file. */
static int refuse_kind(const char *path, const struct stat *st, struct mc_err *err)
{
	if (S_ISDIR(st->st_mode))
		return mc_err_set(err, MC_EIO, "%s: is a directory; give the path of a file to write",
				  path);
	return mc_err_set(err, MC_EIO,
			  "%s: is %s; mcomp writes only regular files and never replaces or "
			  "follows anything else: give the path of a new or regular file",
			  path, mc_file_kind(st->st_mode));
}

int mc_output_target_ok(const char *path, struct stat *st, struct mc_err *err)
{
	struct stat own;

	if (!st)
		st = &own;
	if (lstat(path, st) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return mc_err_set(err, MC_EIO, "%s: cannot stat: %s", path, strerror(errno));
	}
	if (!S_ISREG(st->st_mode))
		return refuse_kind(path, st, err);
	return 1;
}

/* The folder of path ("DIR/" -> "DIR", "/x" -> "/", "x" -> ".") into buf. */
static const char *dir_part(const char *path, char *buf, size_t n)
{
	const char *slash = strrchr(path, '/');
	size_t d;

	if (!slash)
		return ".";
	if (slash == path)
		return "/";
	d = (size_t)(slash - path);
	if (d >= n)
		d = n - 1;
	memcpy(buf, path, d);
	buf[d] = '\0';
	return buf;
}

/* Makes what was renamed or removed in path's folder durable; a failure
 * loses nothing written. */
static void sync_dir(const char *path)
{
	char buf[4096];
	int dfd = open(dir_part(path, buf, sizeof(buf)), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
}

int mc_stage_write(struct mc_stage *s, const char *path, const void *buf, size_t len,
		   struct mc_err *err)
{
	const char *slash, *base;
	struct stat st;
	size_t dlen;
	mode_t mode;
	int ret;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if (!path || !*path)
		return mc_err_set(err, MC_EINVAL, "an output path is empty; give a file name");
	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
		return mc_err_set(err, MC_EIO, "%s: names a folder; give the path of a file",
				  path);
	ret = mc_output_target_ok(path, &st, err);
	if (ret < 0)
		return ret;
	if (ret == 1) {
		/* The permission bits of the file replaced, never set-id bits. */
		mode = st.st_mode & 0777;
	} else {
		mode = new_file_mode();
		ret = mkdir_parents(path, err);
		if (ret)
			return ret;
	}
	dlen = slash ? (size_t)(slash - path) + 1 : 0;
	s->path = strdup(path);
	/* "DIR/.BASE.XXXXXX": hidden, beside the target. */
	s->tmp = malloc(dlen + strlen(base) + 9);
	if (!s->path || !s->tmp) {
		ret = mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto out_free;
	}
	memcpy(s->tmp, path, dlen);
	sprintf(s->tmp + dlen, ".%s.XXXXXX", base);
	/* O_EXCL: never opens what is there, a link included. */
	s->fd = mkostemp(s->tmp, O_CLOEXEC);
	if (s->fd < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot create a temporary file %s: %s", path,
				 s->tmp, strerror(errno));
		goto out_free;
	}
	/* Held until the file is renamed into place or removed: a sweep by
	 * another run leaves a locked temporary file alone. */
	if (flock(s->fd, LOCK_EX | LOCK_NB) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot lock %s: %s", path, s->tmp,
				 strerror(errno));
		goto out_unlink;
	}
	if (fchmod(s->fd, mode) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot set permissions of %s: %s", path, s->tmp,
				 strerror(errno));
		goto out_unlink;
	}
	if (write_all(s->fd, buf, len) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: write failed: %s", path, strerror(errno));
		goto out_unlink;
	}
	if (fsync(s->fd) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: fsync failed: %s", path, strerror(errno));
		goto out_unlink;
	}
	return 0;

out_unlink:
	close(s->fd);
	s->fd = -1;
	unlink(s->tmp);
out_free:
	free(s->tmp);
	free(s->path);
	s->tmp = s->path = NULL;
	return ret;
}

void mc_stage_discard(struct mc_stage *s)
{
	if (s->tmp)
		unlink(s->tmp);
	if (s->fd >= 0)
		close(s->fd);
	free(s->tmp);
	free(s->path);
	s->tmp = s->path = NULL;
	s->fd = -1;
}

/*
 * Puts the staged file in place, replacing only a regular file or nothing.
 * Where the file system allows it, the rename is made safe against the
 * target changing since it was checked: an absent target is created with
 * RENAME_NOREPLACE (fails if anything appeared), a regular one is swapped
 * with RENAME_EXCHANGE and what came out is checked; anything but a regular
 * file is swapped back, so nothing is ever destroyed.
 */
int mc_stage_commit(struct mc_stage *s, struct mc_err *err)
{
	struct stat st;
	int ret, tries;

	if (!s->tmp)
		return mc_err_set(err, MC_EIO, "nothing staged to commit");
	for (tries = 0; tries < 3; tries++) {
		ret = mc_output_target_ok(s->path, &st, err);
		if (ret < 0)
			goto out_discard;
		if (ret == 0) {
			if (renameat2(AT_FDCWD, s->tmp, AT_FDCWD, s->path, RENAME_NOREPLACE) == 0)
				goto done;
			if (errno == EEXIST)
				continue; /* something appeared: look again */
			if (errno != EINVAL && errno != ENOSYS)
				goto rename_failed;
		} else {
			if (renameat2(AT_FDCWD, s->tmp, AT_FDCWD, s->path, RENAME_EXCHANGE) == 0) {
				/* The old entry is now at s->tmp. */
				if (lstat(s->tmp, &st) == 0 && !S_ISREG(st.st_mode)) {
					renameat2(AT_FDCWD, s->tmp, AT_FDCWD, s->path,
						  RENAME_EXCHANGE);
					ret = refuse_kind(s->path, &st, err);
					goto out_discard;
				}
				unlink(s->tmp);
				goto done;
			}
			if (errno == ENOENT)
				continue; /* removed meanwhile: look again */
			if (errno != EINVAL && errno != ENOSYS)
				goto rename_failed;
		}
		/* A file system without renameat2's flags: checked just above. */
		if (rename(s->tmp, s->path) == 0)
			goto done;
		goto rename_failed;
	}
	ret = mc_err_set(err, MC_EIO, "%s: keeps changing while being replaced; try again",
			 s->path);
	goto out_discard;
rename_failed:
	ret = mc_err_set(err, MC_EIO, "%s: cannot rename %s into place: %s", s->path, s->tmp,
			 strerror(errno));
out_discard:
	mc_stage_discard(s);
	return ret;
done:
	sync_dir(s->path);
	free(s->tmp);
	s->tmp = NULL; /* committed: discard must not remove it */
	mc_stage_discard(s);
	return 0;
}

MC_API int mc_write_file_atomic(const char *path, const void *buf, size_t len, struct mc_err *err)
{
	struct mc_stage s;
	int ret;

	ret = mc_stage_write(&s, path, buf, len, err);
	if (ret)
		return ret;
	return mc_stage_commit(&s, err);
}

int mc_remove_regular(const char *path, struct mc_err *err)
{
	struct stat st;
	int ret = mc_output_target_ok(path, &st, err);

	if (ret <= 0)
		return ret;
	if (unlink(path) < 0 && errno != ENOENT)
		return mc_err_set(err, MC_EIO, "%s: cannot remove: %s", path, strerror(errno));
	sync_dir(path);
	return 0;
}

/* Whether name is ".BASE.XXXXXX", mkstemp's six letters and digits. */
static int is_temp_of(const char *name, const char *base)
{
	size_t b = strlen(base), n = strlen(name);

	if (n != b + 8 || name[0] != '.' || strncmp(name + 1, base, b) || name[b + 1] != '.')
		return 0;
	for (size_t i = b + 2; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9')))
			return 0;
	return 1;
}

int mc_sweep_stale_temps(const char *path, const struct timespec *since,
			 void (*note)(void *arg, const char *tmp), void *arg)
{
	char dbuf[4096], full[4096 + 256];
	const char *dir, *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	struct dirent *de;
	int dfd, n = 0;
	DIR *d;

	if (!*base || strlen(base) > 240)
		return 0;
	dir = dir_part(path, dbuf, sizeof(dbuf));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0; /* no folder yet: nothing left behind */
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	while ((de = readdir(d))) {
		struct stat st, fst;
		int fd;

		if (!is_temp_of(de->d_name, base))
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_uid != geteuid())
			continue;
		/* Older than this run: not one a process that started after us is
		 * creating (before it could lock it). */
		if (st.st_mtim.tv_sec > since->tv_sec ||
		    (st.st_mtim.tv_sec == since->tv_sec && st.st_mtim.tv_nsec >= since->tv_nsec))
			continue;
		fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* The same file as seen, and no live process holds its lock. */
		if (fstat(fd, &fst) == 0 && fst.st_dev == st.st_dev && fst.st_ino == st.st_ino &&
		    flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dfd, de->d_name, 0) == 0) {
			n++;
			if (note) {
				snprintf(full, sizeof(full), "%s%s%s", slash ? dir : "",
					 slash && strcmp(dir, "/") ? "/" : "", de->d_name);
				note(arg, full);
			}
		}
		close(fd);
	}
	closedir(d);
	return n;
}
