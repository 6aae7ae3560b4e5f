/* SPDX-License-Identifier: MIT */
/*
 * param_int.h - checking parameter tables that plugins declare (param.c),
 * for the pass loader. Not installed.
 */
#ifndef MCOMP_PARAM_INT_H
#define MCOMP_PARAM_INT_H

#include <mcomp/param.h>

/*
 * What a plugin's parameter table may hold (docs/writing-passes.md): rows
 * before MC_PARAM_END, choices before NULL, bytes in a name (pass or
 * parameter) and in any other text.
 */
#define MC_PARAM_MAX_ROWS 256
#define MC_PARAM_MAX_CHOICES 256
#define MC_PARAM_MAX_NAME 63
#define MC_PARAM_MAX_TEXT 4096

/* Whether the n bytes at s are UTF-8 without control characters (C0, DEL, C1). */
int mc_text_printable(const char *s, size_t n);
/* Whether s is a name: 1 to max of a-z, 0-9, '_' and '-', not starting with '-'. */
int mc_name_valid(const char *s, size_t max);
/*
 * Checks a parameter table a plugin declares for a config struct of
 * conf_size bytes: MC_PARAM_END within MC_PARAM_MAX_ROWS rows; each row's
 * name valid and unique, type and item type known, field inside the struct
 * (offset + size <= conf_size), aligned for its C type and not overlapping
 * another; flags known; range not empty; texts printable and bounded; enum
 * choices present and NULL-terminated within MC_PARAM_MAX_CHOICES. No byte
 * is read that span(arg, p) (the readable bytes from p on; NULL: all
 * memory) does not vouch for, so a table without MC_PARAM_END gives a
 * message, not a fault. 0, or MC_EPLUGIN with a message (no file named).
 */
int mc_param_check_table(const struct mc_param_def *defs, size_t conf_size,
			 size_t (*span)(void *arg, const void *p), void *arg, struct mc_err *err);

#endif
