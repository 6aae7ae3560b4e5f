/* SPDX-License-Identifier: MIT */
/*
 * What the ONNX and TFLite exporters share: an arena of scratch blocks
 * freed together at the end of an export, and the exporter's notes to the
 * caller's log.
 */
#ifndef MC_IO_EXPORT_INT_H
#define MC_IO_EXPORT_INT_H

#include <stdarg.h>
#include <stddef.h>

#include <mcomp/onnx.h>

struct mc_xarena {
	void **blocks;
	size_t n, cap;
	int nomem; /* an allocation failed: the export's result is MC_ENOMEM */
};

/* n zeroed bytes owned by a; NULL (and a->nomem) when out of memory. */
void *mc_xarena_alloc(struct mc_xarena *a, size_t n);
/* A formatted string owned by a; NULL (and a->nomem) when out of memory. */
char *mc_xarena_vfmt(struct mc_xarena *a, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Frees every block of a, and a's list. */
void mc_xarena_free(struct mc_xarena *a);

/* The message through meta's log callback, if it has one. */
void mc_export_vnote(const struct mc_onnx_meta *meta, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
