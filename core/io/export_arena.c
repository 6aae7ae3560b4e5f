/* SPDX-License-Identifier: MIT */
/* The exporters' arena and notes (export_int.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/export_int.h"

void *mc_xarena_alloc(struct mc_xarena *a, size_t n)
{
	void *p;

	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 256;
		void **b = realloc(a->blocks, cap * sizeof(*b));

		if (!b) {
			a->nomem = 1;
			return NULL;
		}
		a->blocks = b;
		a->cap = cap;
	}
	p = calloc(1, n ? n : 1);
	if (!p) {
		a->nomem = 1;
		return NULL;
	}
	a->blocks[a->n++] = p;
	return p;
}

char *mc_xarena_vfmt(struct mc_xarena *a, const char *fmt, va_list ap)
{
	va_list again;
	char *s;
	int n;

	va_copy(again, ap);
	n = vsnprintf(NULL, 0, fmt, ap);
	s = n < 0 ? NULL : mc_xarena_alloc(a, (size_t)n + 1);
	if (s)
		vsnprintf(s, (size_t)n + 1, fmt, again);
	va_end(again);
	return s;
}

void mc_xarena_free(struct mc_xarena *a)
{
	for (size_t k = 0; k < a->n; k++)
		free(a->blocks[k]);
	free(a->blocks);
	a->blocks = NULL;
	a->n = a->cap = 0;
}

void mc_export_vnote(const struct mc_onnx_meta *meta, int level, const char *fmt, va_list ap)
{
	char msg[512];

	if (!meta || !meta->log)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	meta->log(meta->log_arg, level, msg);
}
