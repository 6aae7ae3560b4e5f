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
 * mc_param_free), enum -> int (index into choices), list -> struct mc_list,
 * map -> struct mc_map. A row whose field has another C type does not
 * compile (like moduleparam.h's param_check_##type).
 *
 * After the help text a row may take designators for what most rows do not
 * need:
 *
 *	MC_PARAM_INT(struct lr_conf, rank, NULL, 1, 4096, "singular values kept",
 *		     .flags = MC_PARAM_FOPTIONAL, .group = "size"),
 *	MC_PARAM_FLOAT(struct lr_conf, energy, NULL, 0, 1, "fraction of the energy kept",
 *		       .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FMIN_OPEN, .group = "size"),
 *	MC_PARAM_MAP(struct lr_conf, ranks, MC_PARAM_TINT, "{}", 1, 4096,
 *		     "per-layer rank: {fc1: 8, \"conv*\": 16}"),
 *
 * - MC_PARAM_FOPTIONAL: no default (def is NULL) and not required; the field
 *   stays zero (NULL) unless given. A pass tells given from default with
 *   mc_ctx_given() (mcomp/pass.h).
 * - MC_PARAM_FMIN_OPEN, MC_PARAM_FMAX_OPEN: the bound itself is excluded:
 *   energy above is in (0, 1].
 * - MC_PARAM_FOUTPUT: a path the pass writes (a plot, a cascade file); see
 *   mc_ctx_write in mcomp/pass.h.
 * - .group: rows sharing a group name exclude each other: at most one of
 *   them may be given, and exactly one when any of them is required (no
 *   default and not optional). Giving two is refused at the second, naming
 *   both.
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
	MC_PARAM_TMAP,	 /* names (layer names or globs) to values of type .elem */
	MC_PARAM_TYPE_COUNT,
};

/* A list value: n items, each kept as text; for lists of numbers num[i]
 * holds the parsed value too (NULL for other lists). */
struct mc_list {
	int n;
	char **str;
	double *num;
};

/*
 * A map value: n entries in the order given, keys unique. str[i] is the
 * value as text; num[i] the parsed value for int, float and bool items and
 * the index of the choice for enum items (num is NULL for string items).
 */
struct mc_map {
	int n;
	char **key;
	char **str;
	double *num;
};

/*
 * One parameter. The MC_PARAM_* macros below fill it; help must stay right
 * after choices (they pass the help text positionally after .choices, so
 * that designators may follow it without an empty variadic argument).
 */
struct mc_param_def {
	const char *name;
	enum mc_param_type type;
	enum mc_param_type elem; /* item type of a list or map */
	size_t offset;		 /* of the field in the config struct */
	const char *def;	 /* default as YAML text ("[]", "{}" when empty); NULL: required */
	double min, max;	 /* range of int, float and numeric items ([0, 0]: none) */
	const char *const *choices; /* enum choices (and string items, if set): NULL-terminated */
	const char *help;
	unsigned flags;	   /* MC_PARAM_F* */
	const char *group; /* rows of one group exclude each other; NULL: none */
};

/* Flags of a row. */
#define MC_PARAM_FOMIT 1u     /* an op attribute a model file leaves out when at its default */
#define MC_PARAM_FOPTIONAL 2u /* no default and not required: zero unless given */
#define MC_PARAM_FMIN_OPEN 4u /* min is excluded from the range: (min, ... */
#define MC_PARAM_FMAX_OPEN 8u /* max is excluded from the range: ..., max) */
/* A path row naming a file the pass writes: the host checks it with every
 * file of the pipeline at validation, and the pass writes it only through
 * mc_ctx_write (mcomp/pass.h). */
#define MC_PARAM_FOUTPUT 16u

/*
 * The compile-time check of a row: field f of st must have the C type of
 * parameter type ty, or the table does not compile. 0, as a size_t.
 */
#ifdef __cplusplus
#define MC_PARAM_CHECK(st, f, ty) 0
#else
#define MC_PARAM_CTYPE_OK_(F, ty)                                                                \
	(__builtin_types_compatible_p(F, int) ?                                                  \
		 ((ty) == MC_PARAM_TINT || (ty) == MC_PARAM_TBOOL || (ty) == MC_PARAM_TENUM) :     \
	 __builtin_types_compatible_p(F, double) ? (ty) == MC_PARAM_TFLOAT :                     \
	 __builtin_types_compatible_p(F, char *) ?                                               \
		 ((ty) == MC_PARAM_TSTRING || (ty) == MC_PARAM_TPATH ||                           \
		  (ty) == MC_PARAM_TMODEL || (ty) == MC_PARAM_TSPLIT) :                           \
	 __builtin_types_compatible_p(F, struct mc_list) ? (ty) == MC_PARAM_TLIST :              \
	 __builtin_types_compatible_p(F, struct mc_map) ? (ty) == MC_PARAM_TMAP : 0)
#define MC_PARAM_CHECK(st, f, ty)                                                               \
	(0 * sizeof(struct {                                                                     \
		 _Static_assert(MC_PARAM_CTYPE_OK_(__typeof__(((st *)0)->f), ty),                \
				"parameter field " #st "." #f " has the wrong C type for its "   \
				"MC_PARAM_* type (int, double, char *, struct mc_list, "          \
				"struct mc_map)");                                               \
		 int mc_unused_;                                                                 \
	 }))
#endif

/* ... is the help text, then optional designators (.flags, .group). */
#define MC_PARAM_(st, f, ty, el, d, lo, hi, ch, ...)                                             \
	{ .name = #f, .type = (ty), .elem = (el),                                                \
	  .offset = offsetof(st, f) + MC_PARAM_CHECK(st, f, ty), .def = (d), .min = (lo),      \
	  .max = (hi), .choices = (ch), __VA_ARGS__ }
#define MC_PARAM_INT(st, f, d, lo, hi, ...) \
	MC_PARAM_(st, f, MC_PARAM_TINT, MC_PARAM_TINT, d, lo, hi, NULL, __VA_ARGS__)
#define MC_PARAM_FLOAT(st, f, d, lo, hi, ...) \
	MC_PARAM_(st, f, MC_PARAM_TFLOAT, MC_PARAM_TFLOAT, d, lo, hi, NULL, __VA_ARGS__)
#define MC_PARAM_BOOL(st, f, d, ...) \
	MC_PARAM_(st, f, MC_PARAM_TBOOL, MC_PARAM_TBOOL, d, 0, 1, NULL, __VA_ARGS__)
#define MC_PARAM_STRING(st, f, d, ...) \
	MC_PARAM_(st, f, MC_PARAM_TSTRING, MC_PARAM_TSTRING, d, 0, 0, NULL, __VA_ARGS__)
#define MC_PARAM_PATH(st, f, d, ...) \
	MC_PARAM_(st, f, MC_PARAM_TPATH, MC_PARAM_TPATH, d, 0, 0, NULL, __VA_ARGS__)
#define MC_PARAM_MODEL(st, f, d, ...) \
	MC_PARAM_(st, f, MC_PARAM_TMODEL, MC_PARAM_TMODEL, d, 0, 0, NULL, __VA_ARGS__)
#define MC_PARAM_SPLIT(st, f, d, ...) \
	MC_PARAM_(st, f, MC_PARAM_TSPLIT, MC_PARAM_TSPLIT, d, 0, 0, NULL, __VA_ARGS__)
#define MC_PARAM_ENUM(st, f, d, ch, ...) \
	MC_PARAM_(st, f, MC_PARAM_TENUM, MC_PARAM_TENUM, d, 0, 0, ch, __VA_ARGS__)
/* A list whose items have type el (int, float, string, model or split). */
#define MC_PARAM_LIST(st, f, el, d, lo, hi, ...) \
	MC_PARAM_(st, f, MC_PARAM_TLIST, el, d, lo, hi, NULL, __VA_ARGS__)
/* A map from names to values of type el (int, float, bool or string). */
#define MC_PARAM_MAP(st, f, el, d, lo, hi, ...) \
	MC_PARAM_(st, f, MC_PARAM_TMAP, el, d, lo, hi, NULL, __VA_ARGS__)
/* A map from names to choices of ch (num[i] holds the index). */
#define MC_PARAM_MAP_ENUM(st, f, d, ch, ...) \
	MC_PARAM_(st, f, MC_PARAM_TMAP, MC_PARAM_TENUM, d, 0, 0, ch, __VA_ARGS__)
#define MC_PARAM_END { .name = NULL }
/* A row named nm at byte offset off: for fields inside a struct embedded in
 * the config struct (see MC_TRAIN_PARAMS in mcomp/train.h). Unchecked: the
 * macro that uses it should check the field's type with MC_PARAM_CHECK. */
#define MC_PARAM_AT(nm, ty, el, off, d, lo, hi, ch, ...)                                         \
	{ .name = (nm), .type = (ty), .elem = (el), .offset = (off), .def = (d), .min = (lo),    \
	  .max = (hi), .choices = (ch), __VA_ARGS__ }

/* "int", "float", ...; "list of model" style names come from mc_param_type_text. */
MC_API const char *mc_param_type_name(enum mc_param_type t);
/* Writes the type of def as a user reads it ("float in [0, 10]", "float in (0, 1]",
 * "one of sgd, adam", "list of float", "map of int in [2, 8]"); returns buf. */
MC_API const char *mc_param_type_text(const struct mc_param_def *def, char *buf, size_t n);

/* The row named name, or NULL. */
MC_API const struct mc_param_def *mc_param_find(const struct mc_param_def *defs, const char *name);
/* The row name closest to name by edit distance, or NULL if none is close. */
MC_API const char *mc_param_suggest(const struct mc_param_def *defs, const char *name);
/* The closest of a NULL-terminated list of words, or NULL if none is close. */
MC_API const char *mc_suggest(const char *const *words, const char *word);

/*
 * Parses text as a value of def's type and stores it into conf. For a list,
 * text is one item; the item is appended. For a map, text is "KEY=VALUE" (an
 * entry; the older spelling of per-layer values). On failure returns
 * MC_EINVAL with a message that starts with the key ("lr: expected a float,
 * got 'fast'") and leaves conf unchanged.
 */
MC_API int mc_param_set(const struct mc_param_def *def, void *conf, const char *text,
			struct mc_err *err);
/*
 * Adds the entry key: text to the map field of def in conf. MC_EINVAL when
 * key is empty or already there, or text is not a value of the map's item
 * type (the message starts "KEY: NAME: ", "ranks: fc1: 0 is out of range").
 */
MC_API int mc_param_map_put(const struct mc_param_def *def, void *conf, const char *key,
			    const char *text, struct mc_err *err);
/* Empties a list or map field (before items are added with mc_param_set). */
MC_API void mc_param_list_clear(const struct mc_param_def *def, void *conf);
/* Applies every default. Returns MC_EINVAL if a default does not parse (a bug in the table). */
MC_API int mc_param_defaults(const struct mc_param_def *defs, void *conf, struct mc_err *err);
/* Writes the value of def in conf as YAML text into buf ("{fc1: 0.5}" for a map);
 * returns buf. */
MC_API const char *mc_param_format(const struct mc_param_def *def, const void *conf, char *buf,
				   size_t n);
/* Frees the strings, lists and maps that the setters allocated in conf. */
MC_API void mc_param_free(const struct mc_param_def *defs, void *conf);
/* Copies conf (of the table defs) into dst, duplicating strings, lists and maps. */
MC_API int mc_param_copy(const struct mc_param_def *defs, void *dst, const void *src, size_t size);

#ifdef __cplusplus
}
#endif
#endif
