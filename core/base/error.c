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
#include <sys/mman.h>

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

/*
 * Every block of mc_calloc carries a header of one alignment unit before its
 * data: its size and how it was made. Blocks of LAZY bytes or more are fresh
 * anonymous mappings, which the kernel zeroes a page at a time when first
 * touched: a tensor that stays zero (a layer a sparse file leaves mostly
 * empty) costs neither memory nor the time to clear it. Smaller blocks come
 * from the heap and are cleared here.
 */
#define ALIGN 64
#define LAZY ((size_t)4 << 20)
#define MAGIC 0x6d63616cu

struct block {
	size_t total; /* bytes from the header on */
	uint32_t magic;
	uint32_t mapped;
};

MC_API void *mc_calloc(size_t nmemb, size_t size)
{
	struct block *b;
	size_t bytes;

	if (mc_mul_overflow(nmemb, size, &bytes) || bytes > SIZE_MAX - 2 * ALIGN - 4096)
		return NULL;
	/* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a block. */
	bytes = (bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
	if (bytes == 0)
		bytes = ALIGN;
	if (bytes >= LAZY) {
		void *p = mmap(NULL, bytes + ALIGN, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return NULL;
		b = p;
		b->mapped = 1;
	} else {
		b = aligned_alloc(ALIGN, bytes + ALIGN);
		if (!b)
			return NULL;
		memset(b, 0, bytes + ALIGN);
	}
	b->total = bytes + ALIGN;
	b->magic = MAGIC;
	return (char *)b + ALIGN;
}

MC_API void mc_free(void *p)
{
	struct block *b;

	if (!p)
		return;
	b = (struct block *)((char *)p - ALIGN);
	if (b->magic != MAGIC) {
		free(p); /* not from mc_calloc (a caller's bug): what free() would have done */
		return;
	}
	b->magic = 0;
	if (b->mapped)
		munmap(b, b->total);
	else
		free(b);
}
