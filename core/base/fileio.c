// SPDX-License-Identifier: MIT
/*
 * fileio.c - whole-file reads with a size limit, and atomic writes.
 *
 * An output file is written to a temporary file beside the target (same
 * folder, so rename(2) cannot cross file systems), flushed to disk and
 * renamed over the target. A failure at any step removes the temporary file
 * and leaves the previous target untouched.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/safetensors.h>

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

MC_API int mc_write_file_atomic(const char *path, const void *buf, size_t len, struct mc_err *err)
{
	const char *slash, *base;
	struct stat st;
	char *tmp = NULL;
	size_t dlen;
	mode_t mode;
	int fd = -1, ret, dfd;

	if (!path || !*path)
		return mc_err_set(err, MC_EINVAL, "an output path is empty; give a file name");
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return mc_err_set(err, MC_EIO,
					  "%s: is a directory; give the path of a file to write",
					  path);
		mode = st.st_mode & 07777;
	} else {
		mode = new_file_mode();
		ret = mkdir_parents(path, err);
		if (ret)
			return ret;
	}

	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	if (!*base)
		return mc_err_set(err, MC_EIO, "%s: names a directory; give the path of a file",
				  path);
	dlen = slash ? (size_t)(slash - path) + 1 : 0;
	/* "DIR/.BASE.XXXXXX": hidden, beside the target. */
	tmp = malloc(dlen + strlen(base) + 9);
	if (!tmp)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
	memcpy(tmp, path, dlen);
	sprintf(tmp + dlen, ".%s.XXXXXX", base);

	fd = mkstemp(tmp);
	if (fd < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot create a temporary file %s: %s", path,
				 tmp, strerror(errno));
		goto out_free;
	}
	if (fchmod(fd, mode) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot set permissions of %s: %s", path, tmp,
				 strerror(errno));
		goto out_unlink;
	}
	if (write_all(fd, buf, len) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: write failed: %s", path, strerror(errno));
		goto out_unlink;
	}
	if (fsync(fd) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: fsync failed: %s", path, strerror(errno));
		goto out_unlink;
	}
	ret = close(fd);
	fd = -1;
	if (ret < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: close failed: %s", path, strerror(errno));
		goto out_unlink;
	}
	if (rename(tmp, path) < 0) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot rename %s into place: %s", path, tmp,
				 strerror(errno));
		goto out_unlink;
	}
	/* Make the rename itself durable; a failure here loses nothing written. */
	if (dlen > 1)
		tmp[dlen - 1] = '\0';
	dfd = open(dlen > 1 ? tmp : dlen ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(tmp);
	return 0;

out_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out_free:
	free(tmp);
	return ret;
}
