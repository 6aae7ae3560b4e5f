/* SPDX-License-Identifier: MIT */
/*
 * error.c - error messages and checked allocation.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/common.h>

MC_API int mc_err_set(struct mc_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

MC_API int mc_err_prefix(struct mc_err *err, const char *fmt, ...)
{
	char head[MC_ERR_MAX];
	size_t h, o;
	va_list ap;

	if (!err)
		return MC_EINVAL;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head) - 2, fmt, ap);
	va_end(ap);
	strcat(head, ": ");
	h = strlen(head);
	o = strnlen(err->msg, sizeof(err->msg) - 1);
	if (h + o >= sizeof(err->msg))
		o = sizeof(err->msg) - 1 - h;
	memmove(err->msg + h, err->msg, o);
	memcpy(err->msg, head, h);
	err->msg[h + o] = '\0';
	return err->code;
}

static volatile sig_atomic_t interrupt_sig;

MC_API void mc_interrupt(int sig)
{
	interrupt_sig = sig;
}

MC_API int mc_interrupted(void)
{
	return interrupt_sig;
}

MC_API int mc_exit_status(int code)
{
	if (code == MC_OK)
		return 0;
	return code == MC_EINVAL ? 2 : 1;
}

MC_API int mc_mul_overflow(size_t a, size_t b, size_t *out)
{
	size_t r;

	if (__builtin_mul_overflow(a, b, &r))
		return -1;
	*out = r;
	return 0;
}

MC_API void *mc_calloc(size_t nmemb, size_t size)
{
	size_t bytes;
	void *p;

	if (mc_mul_overflow(nmemb, size, &bytes) || bytes > SIZE_MAX - 63)
		return NULL;
	/* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a block. */
	bytes = (bytes + 63) & ~(size_t)63;
	if (bytes == 0)
		bytes = 64;
	p = aligned_alloc(64, bytes);
	if (p)
		memset(p, 0, bytes);
	return p;
}

MC_API void mc_free(void *p)
{
	free(p);
}
