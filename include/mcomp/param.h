/* SPDX-License-Identifier: MIT */
/*
 * mcomp/param.h - typed parameters, declared like module_param.
 *
 * A pass (or an op of the runtime) describes its parameters as a table of
 * struct mc_param_def rows: name, type, offset of the field in its config
 * struct, default (as YAML text), range or choices, and one line of help.
 * The host parses and checks every value with the generic setters below, so
 * no pass parses its own options, and every error names the key.
 *
 *	struct train_conf { int epochs; double lr; int optimizer; };
 *	static const char *const optimizers[] = { "sgd", "adam", NULL };
 *	static const struct mc_param_def train_params[] = {
 *		MC_PARAM_INT(struct train_conf, epochs, "5", 1, 100000, "passes over the data"),
 *		MC_PARAM_FLOAT(struct train_conf, lr, "0.001", 0, 10, "learning rate"),
 *		MC_PARAM_ENUM(struct train_conf, optimizer, "adam", optimizers, "update rule"),
 *		MC_PARAM_END,
 *	};
 *
 * Field types: int -> int, float -> double, bool -> int (0 or 1),
 * string/path/model/split -> char * (owned by the host, freed by
 * mc_param_free), enum -> int (index into choices), list -> struct mc_list.
 */
#ifndef MCOMP_PARAM_H
#define MCOMP_PARAM_H

#include <mcomp/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mc_param_type {
	MC_PARAM_TINT,
	MC_PARAM_TFLOAT,
	MC_PARAM_TBOOL,
	MC_PARAM_TSTRING,
	MC_PARAM_TENUM,
	MC_PARAM_TLIST,
	MC_PARAM_TMODEL, /* the name of a model of the pipeline */
	MC_PARAM_TSPLIT, /* the name of a data split of the pipeline */
	MC_PARAM_TPATH,	 /* a file path, resolved against the pipeline's folder */
	MC_PARAM_TYPE_COUNT,
};

/* A list value: n items, each kept as text; for lists of numbers num[i]
 * holds the parsed value too (NULL for other lists). */
struct mc_list {
	int n;
	char **str;
	double *num;
};

struct mc_param_def {
	const char *name;
	enum mc_param_type type;
	enum mc_param_type elem; /* item type of a list */
	size_t offset;		 /* of the field in the config struct */
	const char *def;	 /* default as YAML text ("[]" for an empty list); NULL: required */
	double min, max;	 /* inclusive range of int, float and numeric list items */
	const char *const *choices; /* enum choices (and list items, if set): NULL-terminated */
	const char *help;
	unsigned flags; /* MC_PARAM_F* */
};

/* Flags of a row. */
#define MC_PARAM_FOMIT 1u /* an op attribute a model file leaves out when at its default */

#define MC_PARAM_(st, f, ty, el, d, lo, hi, ch, h)                                               \
	{ .name = #f, .type = (ty), .elem = (el), .offset = offsetof(st, f), .def = (d),           \
	  .min = (lo), .max = (hi), .choices = (ch), .help = (h) }
#define MC_PARAM_INT(st, f, d, lo, hi, h) \
	MC_PARAM_(st, f, MC_PARAM_TINT, MC_PARAM_TINT, d, lo, hi, NULL, h)
#define MC_PARAM_FLOAT(st, f, d, lo, hi, h) \
	MC_PARAM_(st, f, MC_PARAM_TFLOAT, MC_PARAM_TFLOAT, d, lo, hi, NULL, h)
#define MC_PARAM_BOOL(st, f, d, h) MC_PARAM_(st, f, MC_PARAM_TBOOL, MC_PARAM_TBOOL, d, 0, 1, NULL, h)
#define MC_PARAM_STRING(st, f, d, h) \
	MC_PARAM_(st, f, MC_PARAM_TSTRING, MC_PARAM_TSTRING, d, 0, 0, NULL, h)
#define MC_PARAM_PATH(st, f, d, h) MC_PARAM_(st, f, MC_PARAM_TPATH, MC_PARAM_TPATH, d, 0, 0, NULL, h)
#define MC_PARAM_MODEL(st, f, d, h) \
	MC_PARAM_(st, f, MC_PARAM_TMODEL, MC_PARAM_TMODEL, d, 0, 0, NULL, h)
#define MC_PARAM_SPLIT(st, f, d, h) \
	MC_PARAM_(st, f, MC_PARAM_TSPLIT, MC_PARAM_TSPLIT, d, 0, 0, NULL, h)
#define MC_PARAM_ENUM(st, f, d, ch, h) \
	MC_PARAM_(st, f, MC_PARAM_TENUM, MC_PARAM_TENUM, d, 0, 0, ch, h)
/* A list whose items have type el (int, float, string, model or split). */
#define MC_PARAM_LIST(st, f, el, d, lo, hi, h) MC_PARAM_(st, f, MC_PARAM_TLIST, el, d, lo, hi, NULL, h)
#define MC_PARAM_END { .name = NULL }
/* A row named nm at byte offset off: for fields inside a struct embedded in
 * the config struct (see MC_TRAIN_PARAMS in mcomp/train.h). */
#define MC_PARAM_AT(nm, ty, el, off, d, lo, hi, ch, h)                                          \
	{ .name = (nm), .type = (ty), .elem = (el), .offset = (off), .def = (d), .min = (lo),    \
	  .max = (hi), .choices = (ch), .help = (h) }

/* "int", "float", ...; "list of model" style names come from mc_param_type_text. */
MC_API const char *mc_param_type_name(enum mc_param_type t);
/* Writes the type of def as a user reads it ("float in [0, 10]", "one of sgd, adam",
 * "list of float"); returns buf. */
MC_API const char *mc_param_type_text(const struct mc_param_def *def, char *buf, size_t n);

/* The row named name, or NULL. */
MC_API const struct mc_param_def *mc_param_find(const struct mc_param_def *defs, const char *name);
/* The row name closest to name by edit distance, or NULL if none is close. */
MC_API const char *mc_param_suggest(const struct mc_param_def *defs, const char *name);
/* The closest of a NULL-terminated list of words, or NULL if none is close. */
MC_API const char *mc_suggest(const char *const *words, const char *word);

/*
 * Parses text as a value of def's type and stores it into conf. For a list,
 * text is one item; the item is appended. On failure returns MC_EINVAL with a
 * message that starts with the key ("lr: expected a float, got 'fast'") and
 * leaves conf unchanged.
 */
MC_API int mc_param_set(const struct mc_param_def *def, void *conf, const char *text,
			struct mc_err *err);
/* Empties a list field (before items are appended with mc_param_set). */
MC_API void mc_param_list_clear(const struct mc_param_def *def, void *conf);
/* Applies every default. Returns MC_EINVAL if a default does not parse (a bug in the table). */
MC_API int mc_param_defaults(const struct mc_param_def *defs, void *conf, struct mc_err *err);
/* Writes the value of def in conf as YAML text into buf; returns buf. */
MC_API const char *mc_param_format(const struct mc_param_def *def, const void *conf, char *buf,
				   size_t n);
/* Frees the strings and lists that the setters allocated in conf. */
MC_API void mc_param_free(const struct mc_param_def *defs, void *conf);
/* Copies conf (of the table defs) into dst, duplicating strings and lists. */
MC_API int mc_param_copy(const struct mc_param_def *defs, void *dst, const void *src, size_t size);

#ifdef __cplusplus
}
#endif
#endif
