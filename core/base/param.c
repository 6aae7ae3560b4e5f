/* SPDX-License-Identifier: MIT */
/*
 * param.c - typed parameters: the generic setters behind every pass
 * parameter and op attribute (see mcomp/param.h).
 *
 * A value arrives as YAML scalar text. Each type has one parser that checks
 * syntax and range and names the key in its message, so no pass parses its
 * own options. A range of [0, 0] on an int or float means "unbounded";
 * MC_PARAM_FMIN_OPEN and MC_PARAM_FMAX_OPEN exclude a bound itself.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mcomp/param.h>

#include "base/param_int.h"

static const char *const type_names[MC_PARAM_TYPE_COUNT] = {
	[MC_PARAM_TINT] = "int",       [MC_PARAM_TFLOAT] = "float", [MC_PARAM_TBOOL] = "bool",
	[MC_PARAM_TSTRING] = "string", [MC_PARAM_TENUM] = "enum",   [MC_PARAM_TLIST] = "list",
	[MC_PARAM_TMODEL] = "model",   [MC_PARAM_TSPLIT] = "split", [MC_PARAM_TPATH] = "path",
	[MC_PARAM_TMAP] = "map",
};

_Static_assert(sizeof(type_names) / sizeof(type_names[0]) == MC_PARAM_TYPE_COUNT,
	       "one name per parameter type");

MC_API const char *mc_param_type_name(enum mc_param_type t)
{
	if ((unsigned)t >= MC_PARAM_TYPE_COUNT)
		return "?";
	return type_names[t];
}

static void format_double(double v, char *buf, size_t n);

static int has_range(const struct mc_param_def *def)
{
	return !(def->min == 0 && def->max == 0);
}

static int is_numeric(enum mc_param_type t)
{
	return t == MC_PARAM_TINT || t == MC_PARAM_TFLOAT;
}

/* Writes the range of def as "[0, 1]", "(0, 1]", "[0, 1)". */
static void range_text(const struct mc_param_def *def, char *buf, size_t n)
{
	char lo[32], hi[32];

	format_double(def->min, lo, sizeof(lo));
	format_double(def->max, hi, sizeof(hi));
	snprintf(buf, n, "%c%s, %s%c", def->flags & MC_PARAM_FMIN_OPEN ? '(' : '[', lo, hi,
		 def->flags & MC_PARAM_FMAX_OPEN ? ')' : ']');
}

static int in_range(const struct mc_param_def *def, double v)
{
	if (!has_range(def))
		return 1;
	if (def->flags & MC_PARAM_FMIN_OPEN ? v <= def->min : v < def->min)
		return 0;
	if (def->flags & MC_PARAM_FMAX_OPEN ? v >= def->max : v > def->max)
		return 0;
	return 1;
}

/* Appends choices as "a, b, c" to buf at *pos. */
static void put_choices(const char *const *ch, char *buf, size_t n, size_t *pos)
{
	for (int i = 0; ch && ch[i]; i++) {
		if (*pos >= n)
			return;
		int w = snprintf(buf + *pos, n - *pos, "%s%s", i ? ", " : "", ch[i]);
		if (w < 0)
			return;
		*pos += (size_t)w;
	}
}

static void put(char *buf, size_t n, size_t *pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t n, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (*pos >= n)
		return;
	va_start(ap, fmt);
	w = vsnprintf(buf + *pos, n - *pos, fmt, ap);
	va_end(ap);
	if (w > 0)
		*pos += (size_t)w;
}

MC_API const char *mc_param_type_text(const struct mc_param_def *def, char *buf, size_t n)
{
	size_t pos = 0;
	enum mc_param_type t = def->type;

	if (!n)
		return buf;
	buf[0] = '\0';
	if (t == MC_PARAM_TLIST || t == MC_PARAM_TMAP) {
		put(buf, n, &pos, "%s of ", t == MC_PARAM_TLIST ? "list" : "map");
		t = def->elem;
	}
	if (def->choices && (t == MC_PARAM_TENUM || t == MC_PARAM_TSTRING)) {
		put(buf, n, &pos, "one of ");
		put_choices(def->choices, buf, n, &pos);
		return buf;
	}
	put(buf, n, &pos, "%s", mc_param_type_name(t));
	if (is_numeric(t) && has_range(def)) {
		char range[80];

		range_text(def, range, sizeof(range));
		put(buf, n, &pos, " in %s", range);
	}
	else if (t == MC_PARAM_TMODEL || t == MC_PARAM_TSPLIT)
		put(buf, n, &pos, " name");
	return buf;
}

MC_API const struct mc_param_def *mc_param_find(const struct mc_param_def *defs, const char *name)
{
	for (int i = 0; defs && defs[i].name; i++)
		if (!strcmp(defs[i].name, name))
			return &defs[i];
	return NULL;
}

/* Levenshtein distance, capped: returns cap + 1 once it must exceed cap. */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[65];

	if (lb > 64 || la > 64)
		return cap + 1;
	if ((la > lb ? la - lb : lb - la) > cap)
		return cap + 1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0], best;

		row[0] = i;
		best = row[0];
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t sub = diag + (tolower((unsigned char)a[i - 1]) !=
					     tolower((unsigned char)b[j - 1]));
			size_t v = sub;

			if (up + 1 < v)
				v = up + 1;
			if (row[j - 1] + 1 < v)
				v = row[j - 1] + 1;
			row[j] = v;
			diag = up;
			if (v < best)
				best = v;
		}
		if (best > cap)
			return cap + 1;
	}
	return row[lb];
}

/* A word is close when at most max(2, len/3) edits away. */
static size_t closeness_cap(const char *word)
{
	size_t l = strlen(word) / 3;

	return l > 2 ? l : 2;
}

MC_API const char *mc_suggest(const char *const *words, const char *word)
{
	const char *best = NULL;
	size_t cap, best_d;

	if (!words || !word)
		return NULL;
	cap = closeness_cap(word);
	best_d = cap + 1;
	for (int i = 0; words[i]; i++) {
		size_t d = edit_distance(word, words[i], cap);

		if (d < best_d) {
			best_d = d;
			best = words[i];
		}
	}
	return best;
}

MC_API const char *mc_param_suggest(const struct mc_param_def *defs, const char *name)
{
	const char *best = NULL;
	size_t cap, best_d;

	if (!defs || !name)
		return NULL;
	cap = closeness_cap(name);
	best_d = cap + 1;
	for (int i = 0; defs[i].name; i++) {
		size_t d = edit_distance(name, defs[i].name, cap);

		if (d < best_d) {
			best_d = d;
			best = defs[i].name;
		}
	}
	return best;
}

/* ---------------------------------------------------------------- scalar parsers */

/* A YAML 1.2 core-schema decimal integer: [-+]?[0-9]+. */
static int parse_int(const char *s, long long *out)
{
	const char *p = s;
	char *end;

	if (*p == '-' || *p == '+')
		p++;
	if (!isdigit((unsigned char)*p))
		return -1;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -1;
	errno = 0;
	*out = strtoll(s, &end, 10);
	if (errno == ERANGE || *end)
		return -2;
	return 0;
}

/* [-+]?(digits[.digits?]|.digits)([eE][-+]?digits)?, finite. */
static int parse_float(const char *s, double *out)
{
	const char *p = s;
	int digits = 0;
	char *end;

	if (*p == '-' || *p == '+')
		p++;
	while (isdigit((unsigned char)*p)) {
		p++;
		digits++;
	}
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p)) {
			p++;
			digits++;
		}
	}
	if (!digits)
		return -1;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '-' || *p == '+')
			p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p)
		return -1;
	errno = 0;
	*out = strtod(s, &end);
	if (*end)
		return -1;
	if (!isfinite(*out))
		return -2;
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no", "off" };

	for (int i = 0; i < 3; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static int find_choice(const char *const *choices, const char *s)
{
	for (int i = 0; choices && choices[i]; i++)
		if (!strcmp(choices[i], s))
			return i;
	return -1;
}

static int choice_error(const struct mc_param_def *def, const char *text, struct mc_err *err)
{
	char list[1024];
	size_t pos = 0;
	const char *near = mc_suggest(def->choices, text);

	list[0] = '\0';
	put_choices(def->choices, list, sizeof(list), &pos);
	if (near)
		return mc_err_set(err, MC_EINVAL, "%s: '%s' is not one of %s; did you mean '%s'?",
				  def->name, text, list, near);
	return mc_err_set(err, MC_EINVAL, "%s: '%s' is not one of %s", def->name, text, list);
}

/*
 * Parses one number of type t (int or float) with def's range. On success
 * *num holds the value.
 */
static int parse_number(const struct mc_param_def *def, enum mc_param_type t, const char *text,
			double *num, struct mc_err *err)
{
	if (t == MC_PARAM_TINT) {
		long long v;
		int r = parse_int(text, &v);

		if (r == -1)
			return mc_err_set(err, MC_EINVAL, "%s: expected an integer, got '%s'",
					  def->name, text);
		if (r == -2 || (def->type == MC_PARAM_TINT && (v < INT_MIN || v > INT_MAX)))
			return mc_err_set(err, MC_EINVAL, "%s: %s is too large for an int",
					  def->name, text);
		*num = (double)v;
	} else {
		int r = parse_float(text, num);

		if (r == -1)
			return mc_err_set(err, MC_EINVAL, "%s: expected a number, got '%s'", def->name,
					  text);
		if (r == -2)
			return mc_err_set(err, MC_EINVAL, "%s: %s is not a finite number", def->name,
					  text);
	}
	if (!in_range(def, *num)) {
		char range[80];

		range_text(def, range, sizeof(range));
		return mc_err_set(err, MC_EINVAL, "%s: %s is out of range %s", def->name, text,
				  range);
	}
	return 0;
}

static char **str_field(const struct mc_param_def *def, void *conf)
{
	return (char **)((char *)conf + def->offset);
}

/*
 * Checks one item of a list or map (of type def->elem) and parses it: *num
 * is the number of an int or float, 0 or 1 for a bool, the index of a choice.
 */
static int parse_item(const struct mc_param_def *def, const char *text, double *num,
		      struct mc_err *err)
{
	enum mc_param_type et = def->elem;
	int k;

	*num = 0;
	if (is_numeric(et))
		return parse_number(def, et, text, num, err);
	if (et == MC_PARAM_TBOOL) {
		if (parse_bool(text, &k))
			return mc_err_set(err, MC_EINVAL, "%s: expected true or false, got '%s'",
					  def->name, text);
		*num = k;
		return 0;
	}
	if (def->choices) {
		k = find_choice(def->choices, text);
		if (k < 0)
			return choice_error(def, text, err);
		*num = k;
		return 0;
	}
	if (et != MC_PARAM_TSTRING && !*text)
		return mc_err_set(err, MC_EINVAL, "%s: expected a %s name, got an empty string",
				  def->name, mc_param_type_name(et));
	return 0;
}

static int list_append(const struct mc_param_def *def, void *conf, const char *text,
		       struct mc_err *err)
{
	struct mc_list *l = (struct mc_list *)((char *)conf + def->offset);
	int numeric = is_numeric(def->elem);
	double num;
	char **str;
	char *dup;
	int r;

	r = parse_item(def, text, &num, err);
	if (r)
		return r;
	if (l->n < 0 || l->n >= INT_MAX / 2)
		return mc_err_set(err, MC_EINVAL, "%s: too many items", def->name);
	dup = strdup(text);
	if (!dup)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", def->name);
	str = realloc(l->str, sizeof(*l->str) * (size_t)(l->n + 1));
	if (!str) {
		free(dup);
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", def->name);
	}
	l->str = str;
	if (numeric) {
		double *nv = realloc(l->num, sizeof(*l->num) * (size_t)(l->n + 1));

		if (!nv) {
			free(dup);
			return mc_err_set(err, MC_ENOMEM, "%s: out of memory", def->name);
		}
		l->num = nv;
		l->num[l->n] = num;
	}
	l->str[l->n++] = dup;
	return 0;
}

static struct mc_map *map_field(const struct mc_param_def *def, void *conf)
{
	return (struct mc_map *)((char *)conf + def->offset);
}

/* Whether the values of a map of def keep a parsed number. */
static int map_has_num(const struct mc_param_def *def)
{
	return is_numeric(def->elem) || def->elem == MC_PARAM_TBOOL || def->choices;
}

MC_API int mc_param_map_put(const struct mc_param_def *def, void *conf, const char *key,
			    const char *text, struct mc_err *err)
{
	struct mc_map *m;
	struct mc_param_def named;
	char name[512];
	char *k, *v, **keys, **strs;
	double num;
	int r;

	if (def->type != MC_PARAM_TMAP)
		return mc_err_set(err, MC_EINVAL, "%s: not a map parameter", def->name);
	m = map_field(def, conf);
	if (!key || !*key)
		return mc_err_set(err, MC_EINVAL, "%s: an entry has an empty name; name a layer "
				  "or a glob such as \"conv*\"", def->name);
	if (!text)
		return mc_err_set(err, MC_EINVAL, "%s: %s: no value given", def->name, key);
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->key[i], key))
			return mc_err_set(err, MC_EINVAL, "%s: '%s' is given twice", def->name,
					  key);
	/* Messages name the entry: "overrides: fc1: 1.5 is out of range [0, 1)". */
	named = *def;
	snprintf(name, sizeof(name), "%s: %s", def->name, key);
	named.name = name;
	r = parse_item(&named, text, &num, err);
	if (r)
		return r;
	if (m->n < 0 || m->n >= INT_MAX / 2)
		return mc_err_set(err, MC_EINVAL, "%s: too many entries", def->name);
	k = strdup(key);
	v = strdup(text);
	if (!k || !v)
		goto nomem;
	keys = realloc(m->key, sizeof(*m->key) * (size_t)(m->n + 1));
	if (!keys)
		goto nomem;
	m->key = keys;
	strs = realloc(m->str, sizeof(*m->str) * (size_t)(m->n + 1));
	if (!strs)
		goto nomem;
	m->str = strs;
	if (map_has_num(def)) {
		double *nv = realloc(m->num, sizeof(*m->num) * (size_t)(m->n + 1));

		if (!nv)
			goto nomem;
		m->num = nv;
		m->num[m->n] = num;
	}
	m->key[m->n] = k;
	m->str[m->n] = v;
	m->n++;
	return 0;
nomem:
	free(k);
	free(v);
	return mc_err_set(err, MC_ENOMEM, "%s: out of memory", def->name);
}

/* The older spelling of a map entry: one "KEY=VALUE" string. */
static int map_put_pair(const struct mc_param_def *def, void *conf, const char *text,
			struct mc_err *err)
{
	const char *eq = strchr(text, '=');
	char key[256];

	if (!eq)
		return mc_err_set(err, MC_EINVAL, "%s: expected a mapping such as {fc1: %s} (or "
				  "\"NAME=VALUE\"), got '%s'", def->name,
				  def->elem == MC_PARAM_TINT	? "8" :
				  def->elem == MC_PARAM_TFLOAT ? "0.5" :
								 "...",
				  text);
	if ((size_t)(eq - text) >= sizeof(key))
		return mc_err_set(err, MC_EINVAL, "%s: name too long in '%s'", def->name, text);
	memcpy(key, text, (size_t)(eq - text));
	key[eq - text] = '\0';
	return mc_param_map_put(def, conf, key, eq + 1, err);
}

MC_API int mc_param_set(const struct mc_param_def *def, void *conf, const char *text,
			struct mc_err *err)
{
	char *field = (char *)conf + def->offset;
	double num;
	int r, b;

	if (!text)
		return mc_err_set(err, MC_EINVAL, "%s: no value given", def->name);
	switch (def->type) {
	case MC_PARAM_TINT:
		r = parse_number(def, MC_PARAM_TINT, text, &num, err);
		if (r)
			return r;
		*(int *)field = (int)num;
		return 0;
	case MC_PARAM_TFLOAT:
		r = parse_number(def, MC_PARAM_TFLOAT, text, &num, err);
		if (r)
			return r;
		*(double *)field = num;
		return 0;
	case MC_PARAM_TBOOL:
		if (parse_bool(text, &b))
			return mc_err_set(err, MC_EINVAL, "%s: expected true or false, got '%s'",
					  def->name, text);
		*(int *)field = b;
		return 0;
	case MC_PARAM_TENUM:
		r = find_choice(def->choices, text);
		if (r < 0)
			return choice_error(def, text, err);
		*(int *)field = r;
		return 0;
	case MC_PARAM_TMODEL:
	case MC_PARAM_TSPLIT:
	case MC_PARAM_TPATH:
		if (!*text)
			return mc_err_set(err, MC_EINVAL, "%s: expected a %s%s, got an empty string",
					  def->name, mc_param_type_name(def->type),
					  def->type == MC_PARAM_TPATH ? "" : " name");
		/* fallthrough */
	case MC_PARAM_TSTRING: {
		char *dup = strdup(text);

		if (!dup)
			return mc_err_set(err, MC_ENOMEM, "%s: out of memory", def->name);
		free(*str_field(def, conf));
		*str_field(def, conf) = dup;
		return 0;
	}
	case MC_PARAM_TLIST:
		return list_append(def, conf, text, err);
	case MC_PARAM_TMAP:
		return map_put_pair(def, conf, text, err);
	default:
		return mc_err_set(err, MC_EINVAL, "%s: parameter of unknown type %d", def->name,
				  (int)def->type);
	}
}

MC_API void mc_param_list_clear(const struct mc_param_def *def, void *conf)
{
	struct mc_list *l;

	if (def->type == MC_PARAM_TMAP) {
		struct mc_map *m = map_field(def, conf);

		for (int i = 0; i < m->n; i++) {
			free(m->key[i]);
			free(m->str[i]);
		}
		free(m->key);
		free(m->str);
		free(m->num);
		memset(m, 0, sizeof(*m));
		return;
	}
	if (def->type != MC_PARAM_TLIST)
		return;
	l = (struct mc_list *)((char *)conf + def->offset);
	for (int i = 0; i < l->n; i++)
		free(l->str[i]);
	free(l->str);
	free(l->num);
	l->n = 0;
	l->str = NULL;
	l->num = NULL;
}

/*
 * Defaults are written by programmers, so they are read in a plain subset
 * of YAML flow style: "[1, 2]", "[a, 'b c']", "{fc1: 4, \"conv*\": 8}";
 * items separated by commas, optionally quoted (no escapes), no nesting.
 */

/* The next item of [*p, end) into item, up to a comma outside quotes, trimmed.
 * 1 when there was one, 0 at the end, -1 when it does not fit. */
static int flow_next(const char **p, const char *end, char *item, size_t n)
{
	const char *q = *p;
	size_t k = 0;
	char quote = 0;

	while (q < end && isspace((unsigned char)*q))
		q++;
	if (q == end)
		return 0;
	for (; q < end && (quote || *q != ','); q++) {
		if (quote && *q == quote)
			quote = 0;
		else if (!quote && (*q == '"' || *q == '\''))
			quote = *q;
		if (k + 1 >= n)
			return -1;
		item[k++] = *q;
	}
	while (k && isspace((unsigned char)item[k - 1]))
		k--;
	item[k] = '\0';
	*p = q < end ? q + 1 : q;
	return 1;
}

/* Trims s in place and drops the quotes around it. */
static char *unquote(char *s)
{
	size_t n;

	while (isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
		s[n - 1] = '\0';
		s++;
	}
	return s;
}

/* The inside of a default "[...]" or "{...}" into [*a, *b); 0, or -1 when
 * text is not bracketed by open and close. */
static int flow_inside(const char *text, char open, char close, const char **a, const char **b)
{
	size_t len = strlen(text);

	while (len && isspace((unsigned char)text[len - 1]))
		len--;
	while (len && isspace((unsigned char)*text)) {
		text++;
		len--;
	}
	*a = text;
	*b = text + len;
	if (len < 2 || text[0] != open || text[len - 1] != close)
		return -1;
	(*a)++;
	(*b)--;
	return 0;
}

static int list_default(const struct mc_param_def *def, void *conf, struct mc_err *err)
{
	const char *p, *end;
	char item[256];
	int r;

	mc_param_list_clear(def, conf);
	if (flow_inside(def->def, '[', ']', &p, &end)) {
		/* A bare scalar is a one-item list. */
		if (p == end)
			return 0;
		return mc_param_set(def, conf, def->def, err);
	}
	while ((r = flow_next(&p, end, item, sizeof(item))) > 0) {
		r = mc_param_set(def, conf, unquote(item), err);
		if (r)
			return r;
	}
	if (r < 0)
		return mc_err_set(err, MC_EINVAL, "%s: default item too long", def->name);
	return 0;
}

static int map_default(const struct mc_param_def *def, void *conf, struct mc_err *err)
{
	const char *p, *end;
	char item[512];
	int r;

	mc_param_list_clear(def, conf);
	if (flow_inside(def->def, '{', '}', &p, &end))
		return mc_err_set(err, MC_EINVAL, "%s: default '%s' is not a mapping such as {}",
				  def->name, def->def);
	while ((r = flow_next(&p, end, item, sizeof(item))) > 0) {
		char *colon = NULL, quote = 0;

		for (char *c = item; *c && !colon; c++) {
			if (quote && *c == quote)
				quote = 0;
			else if (!quote && (*c == '"' || *c == '\''))
				quote = *c;
			else if (!quote && *c == ':')
				colon = c;
		}
		if (!colon)
			return mc_err_set(err, MC_EINVAL, "%s: default entry '%s' is not KEY: VALUE",
					  def->name, item);
		*colon = '\0';
		r = mc_param_map_put(def, conf, unquote(item), unquote(colon + 1), err);
		if (r)
			return r;
	}
	if (r < 0)
		return mc_err_set(err, MC_EINVAL, "%s: default entry too long", def->name);
	return 0;
}

MC_API int mc_param_defaults(const struct mc_param_def *defs, void *conf, struct mc_err *err)
{
	for (int i = 0; defs && defs[i].name; i++) {
		const struct mc_param_def *d = &defs[i];
		int r;

		if (d->type == MC_PARAM_TLIST || d->type == MC_PARAM_TMAP) {
			if (d->def) {
				r = d->type == MC_PARAM_TLIST ? list_default(d, conf, err) :
								map_default(d, conf, err);
				if (r)
					return mc_err_prefix(err, "default of parameter");
			}
			continue;
		}
		if (!d->def)
			continue;
		/* An empty default of a path, model or split means "none". */
		if (!*d->def && (d->type == MC_PARAM_TPATH || d->type == MC_PARAM_TMODEL ||
				 d->type == MC_PARAM_TSPLIT)) {
			free(*str_field(d, conf));
			*str_field(d, conf) = NULL;
			continue;
		}
		r = mc_param_set(d, conf, d->def, err);
		if (r)
			return mc_err_prefix(err, "default of parameter");
	}
	return 0;
}

/* ---------------------------------------------------------------- formatting */

/* Shortest "%.Ng" that reads back as the same double. */
static void format_double(double v, char *buf, size_t n)
{
	if (v == (double)(long long)v && v > -1e15 && v < 1e15) {
		snprintf(buf, n, "%.0f", v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, n, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

static int needs_quotes(const char *s)
{
	static const char *const reserved[] = { "true", "false", "yes", "no", "on", "off",
						"null", "~", NULL };
	double d;

	if (!*s)
		return 1;
	for (int i = 0; reserved[i]; i++)
		if (!strcasecmp(s, reserved[i]))
			return 1;
	if (parse_float(s, &d) != -1)
		return 1;
	if (!isalpha((unsigned char)s[0]) && s[0] != '_' && s[0] != '/' && s[0] != '.')
		return 1;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("_-./+", *p))
			return 1;
	return 0;
}

/* Writes s as a YAML scalar: plain when safe, else double-quoted. */
static void put_string(const char *s, char *buf, size_t n, size_t *pos)
{
	if (!s) {
		put(buf, n, pos, "null");
		return;
	}
	if (!needs_quotes(s)) {
		put(buf, n, pos, "%s", s);
		return;
	}
	put(buf, n, pos, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			put(buf, n, pos, "\\%c", *p);
		else if (*p == '\n')
			put(buf, n, pos, "\\n");
		else if (*p == '\t')
			put(buf, n, pos, "\\t");
		else if (*p < 0x20)
			put(buf, n, pos, "\\x%02x", *p);
		else
			put(buf, n, pos, "%c", *p);
	}
	put(buf, n, pos, "\"");
}

MC_API const char *mc_param_format(const struct mc_param_def *def, const void *conf, char *buf,
				   size_t n)
{
	const char *field = (const char *)conf + def->offset;
	size_t pos = 0;
	char num[64];

	if (!n)
		return buf;
	buf[0] = '\0';
	switch (def->type) {
	case MC_PARAM_TINT:
		put(buf, n, &pos, "%d", *(const int *)field);
		break;
	case MC_PARAM_TFLOAT:
		format_double(*(const double *)field, num, sizeof(num));
		put(buf, n, &pos, "%s", num);
		break;
	case MC_PARAM_TBOOL:
		put(buf, n, &pos, "%s", *(const int *)field ? "true" : "false");
		break;
	case MC_PARAM_TENUM: {
		int v = *(const int *)field, k = 0;

		while (def->choices && def->choices[k])
			k++;
		put_string(v >= 0 && v < k ? def->choices[v] : NULL, buf, n, &pos);
		break;
	}
	case MC_PARAM_TSTRING:
	case MC_PARAM_TMODEL:
	case MC_PARAM_TSPLIT:
	case MC_PARAM_TPATH:
		put_string(*(char *const *)field, buf, n, &pos);
		break;
	case MC_PARAM_TLIST: {
		const struct mc_list *l = (const struct mc_list *)field;

		put(buf, n, &pos, "[");
		for (int i = 0; i < l->n; i++) {
			if (i)
				put(buf, n, &pos, ", ");
			if (l->num && def->elem == MC_PARAM_TINT) {
				put(buf, n, &pos, "%.0f", l->num[i]);
			} else if (l->num) {
				format_double(l->num[i], num, sizeof(num));
				put(buf, n, &pos, "%s", num);
			} else {
				put_string(l->str[i], buf, n, &pos);
			}
		}
		put(buf, n, &pos, "]");
		break;
	}
	case MC_PARAM_TMAP: {
		const struct mc_map *m = (const struct mc_map *)field;

		put(buf, n, &pos, "{");
		for (int i = 0; i < m->n; i++) {
			put(buf, n, &pos, "%s", i ? ", " : "");
			put_string(m->key[i], buf, n, &pos);
			put(buf, n, &pos, ": ");
			if (def->elem == MC_PARAM_TINT) {
				put(buf, n, &pos, "%.0f", m->num[i]);
			} else if (def->elem == MC_PARAM_TFLOAT) {
				format_double(m->num[i], num, sizeof(num));
				put(buf, n, &pos, "%s", num);
			} else if (def->elem == MC_PARAM_TBOOL) {
				put(buf, n, &pos, "%s", m->num[i] ? "true" : "false");
			} else {
				put_string(m->str[i], buf, n, &pos);
			}
		}
		put(buf, n, &pos, "}");
		break;
	}
	default:
		break;
	}
	return buf;
}

static int is_string_type(enum mc_param_type t)
{
	return t == MC_PARAM_TSTRING || t == MC_PARAM_TPATH || t == MC_PARAM_TMODEL ||
	       t == MC_PARAM_TSPLIT;
}

MC_API void mc_param_free(const struct mc_param_def *defs, void *conf)
{
	if (!conf)
		return;
	for (int i = 0; defs && defs[i].name; i++) {
		if (is_string_type(defs[i].type)) {
			free(*str_field(&defs[i], conf));
			*str_field(&defs[i], conf) = NULL;
		} else if (defs[i].type == MC_PARAM_TLIST || defs[i].type == MC_PARAM_TMAP) {
			mc_param_list_clear(&defs[i], conf);
		}
	}
}

MC_API int mc_param_copy(const struct mc_param_def *defs, void *dst, const void *src, size_t size)
{
	memcpy(dst, src, size);
	/* First detach every pointer, so a failure part way frees only copies. */
	for (int i = 0; defs && defs[i].name; i++) {
		if (is_string_type(defs[i].type)) {
			*str_field(&defs[i], dst) = NULL;
		} else if (defs[i].type == MC_PARAM_TLIST) {
			struct mc_list *l = (struct mc_list *)((char *)dst + defs[i].offset);

			l->n = 0;
			l->str = NULL;
			l->num = NULL;
		} else if (defs[i].type == MC_PARAM_TMAP) {
			memset(map_field(&defs[i], dst), 0, sizeof(struct mc_map));
		}
	}
	for (int i = 0; defs && defs[i].name; i++) {
		const struct mc_param_def *d = &defs[i];

		if (is_string_type(d->type)) {
			const char *s = *(char *const *)((const char *)src + d->offset);

			if (s && !(*str_field(d, dst) = strdup(s)))
				goto fail;
		} else if (d->type == MC_PARAM_TLIST) {
			const struct mc_list *sl = (const struct mc_list *)((const char *)src +
									   d->offset);
			struct mc_list *dl = (struct mc_list *)((char *)dst + d->offset);

			if (sl->n <= 0)
				continue;
			dl->str = calloc((size_t)sl->n, sizeof(*dl->str));
			if (!dl->str)
				goto fail;
			if (sl->num) {
				dl->num = malloc(sizeof(*dl->num) * (size_t)sl->n);
				if (!dl->num)
					goto fail;
				memcpy(dl->num, sl->num, sizeof(*dl->num) * (size_t)sl->n);
			}
			for (int k = 0; k < sl->n; k++) {
				dl->str[k] = strdup(sl->str[k]);
				if (!dl->str[k]) {
					dl->n = k;
					goto fail;
				}
			}
			dl->n = sl->n;
		} else if (d->type == MC_PARAM_TMAP) {
			const struct mc_map *sm = (const struct mc_map *)((const char *)src +
									 d->offset);
			struct mc_err err;

			/* Entries as given, through the setter: they were valid in src. */
			for (int k = 0; k < sm->n; k++)
				if (mc_param_map_put(d, dst, sm->key[k], sm->str[k], &err))
					goto fail;
		}
	}
	return 0;
fail:
	mc_param_free(defs, dst);
	return MC_ENOMEM;
}

/* ---------------------------------------------------------------- tables from plugins */

/*
 * A plugin's table is read as untrusted data: every row, string and choice
 * array is first vouched for by span() (how many bytes from p lie in
 * readable memory), so a table without MC_PARAM_END or a wild pointer gives
 * a message instead of a fault. Rows are read at most MC_PARAM_MAX_ROWS + 1.
 */
struct table_reader {
	size_t (*span)(void *arg, const void *p);
	void *arg;
};

static size_t reader_span(const struct table_reader *rd, const void *p)
{
	return rd->span ? rd->span(rd->arg, p) : SIZE_MAX;
}

int mc_text_printable(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;

	while (p < end) {
		unsigned c = *p, len, cp;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return 0;
			p++;
			continue;
		}
		len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
		if (!len || c > 0xf4 || (size_t)(end - p) < len)
			return 0;
		cp = c & (0xff >> (len + 1));
		for (unsigned k = 1; k < len; k++) {
			if ((p[k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[k] & 0x3f);
		}
		/* overlong forms, surrogates, past U+10FFFF, and the C1 controls */
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return 0;
		p += len;
	}
	return 1;
}

/*
 * The string at s, checked: readable, NUL-terminated within max bytes,
 * printable. 0, or a reason ("is not in the plugin's memory", ...).
 */
static const char *check_string(const struct table_reader *rd, const char *s, size_t max)
{
	size_t avail = reader_span(rd, s);
	const char *nul;

	if (!avail)
		return "points outside the plugin's memory";
	nul = memchr(s, '\0', avail < max + 1 ? avail : max + 1);
	if (!nul)
		return avail <= max ? "runs past the plugin's memory" : "is too long";
	if (!mc_text_printable(s, (size_t)(nul - s)))
		return "holds control characters or bytes that are not UTF-8";
	return NULL;
}

int mc_name_valid(const char *s, size_t max)
{
	size_t n = 0;

	if (!s || !*s || *s == '-')
		return 0;
	for (; s[n]; n++)
		if (n >= max || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') ||
				  s[n] == '_' || s[n] == '-'))
			return 0;
	return 1;
}

/* The C size and alignment of a field of type t. */
static void field_layout(enum mc_param_type t, size_t *size, size_t *align)
{
	switch (t) {
	case MC_PARAM_TFLOAT:
		*size = sizeof(double);
		*align = _Alignof(double);
		return;
	case MC_PARAM_TSTRING:
	case MC_PARAM_TMODEL:
	case MC_PARAM_TSPLIT:
	case MC_PARAM_TPATH:
		*size = sizeof(char *);
		*align = _Alignof(char *);
		return;
	case MC_PARAM_TLIST:
		*size = sizeof(struct mc_list);
		*align = _Alignof(struct mc_list);
		return;
	case MC_PARAM_TMAP:
		*size = sizeof(struct mc_map);
		*align = _Alignof(struct mc_map);
		return;
	default: /* int, bool, enum */
		*size = sizeof(int);
		*align = _Alignof(int);
		return;
	}
}

#define ROW_FLAGS (MC_PARAM_FOMIT | MC_PARAM_FOPTIONAL | MC_PARAM_FMIN_OPEN | MC_PARAM_FMAX_OPEN | \
		   MC_PARAM_FOUTPUT)

/* Checks row d (already known readable); its name is valid. */
static int check_row(const struct table_reader *rd, const struct mc_param_def *d,
		     size_t conf_size, struct mc_err *err)
{
	const char *why;
	size_t size, align;
	int enum_like;

	if ((unsigned)d->type >= MC_PARAM_TYPE_COUNT || (unsigned)d->elem >= MC_PARAM_TYPE_COUNT)
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' has type %d (item type %d), "
				  "not one of <mcomp/param.h>'s %d types",
				  d->name, (int)d->type, (int)d->elem, MC_PARAM_TYPE_COUNT);
	field_layout(d->type, &size, &align);
	if (d->offset > conf_size || size > conf_size - d->offset)
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' (%s, %zu bytes at offset %zu) "
				  "lies past the end of the %zu-byte config struct; declare it "
				  "with the MC_PARAM_* macros and set conf_size to sizeof the "
				  "struct",
				  d->name, mc_param_type_name(d->type), size, d->offset, conf_size);
	if (d->offset % align)
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' (%s) at offset %zu is not "
				  "aligned to %zu bytes as its C type needs",
				  d->name, mc_param_type_name(d->type), d->offset, align);
	if (d->flags & ~ROW_FLAGS)
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' has unknown flags 0x%x",
				  d->name, d->flags & ~ROW_FLAGS);
	if (d->type == MC_PARAM_TLIST &&
	    (d->elem == MC_PARAM_TLIST || d->elem == MC_PARAM_TMAP))
		return mc_err_set(err, MC_EPLUGIN, "list parameter '%s' has items of type %s; "
				  "lists do not nest", d->name, mc_param_type_name(d->elem));
	if (d->type == MC_PARAM_TMAP && d->elem != MC_PARAM_TINT &&
	    d->elem != MC_PARAM_TFLOAT && d->elem != MC_PARAM_TBOOL &&
	    d->elem != MC_PARAM_TSTRING && d->elem != MC_PARAM_TENUM)
		return mc_err_set(err, MC_EPLUGIN, "map parameter '%s' has values of type %s; "
				  "a map holds ints, floats, bools, strings or enum choices",
				  d->name, mc_param_type_name(d->elem));
	if ((is_numeric(d->type) || is_numeric(d->elem)) && has_range(d) &&
	    !(d->min <= d->max))
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' has an empty range (min above "
				  "max, or NaN)", d->name);
	if ((d->flags & MC_PARAM_FOPTIONAL) && d->def)
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s' is optional and has a "
				  "default; drop MC_PARAM_FOPTIONAL or the default", d->name);
	if (d->def && (why = check_string(rd, d->def, MC_PARAM_MAX_TEXT)))
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s': the default %s", d->name, why);
	if (d->help && (why = check_string(rd, d->help, MC_PARAM_MAX_TEXT)))
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s': the help text %s", d->name,
				  why);
	if (d->group && (why = check_string(rd, d->group, MC_PARAM_MAX_NAME)))
		return mc_err_set(err, MC_EPLUGIN, "parameter '%s': the group name %s", d->name,
				  why);
	enum_like = d->type == MC_PARAM_TENUM ||
		    ((d->type == MC_PARAM_TMAP || d->type == MC_PARAM_TLIST) &&
		     d->elem == MC_PARAM_TENUM);
	if (enum_like && !d->choices)
		return mc_err_set(err, MC_EPLUGIN, "enum parameter '%s' has no choices", d->name);
	if (d->choices) {
		int k;

		for (k = 0;; k++) {
			const char *const *c = &d->choices[k];

			if (reader_span(rd, c) < sizeof(*c))
				return mc_err_set(err, MC_EPLUGIN, "parameter '%s': choice %d lies "
						  "outside the plugin's memory; end the choices "
						  "with NULL", d->name, k + 1);
			if (!*c)
				break;
			if (k == MC_PARAM_MAX_CHOICES)
				return mc_err_set(err, MC_EPLUGIN, "parameter '%s' has no NULL "
						  "after %d choices; end the choices with NULL",
						  d->name, MC_PARAM_MAX_CHOICES);
			if ((why = check_string(rd, *c, MC_PARAM_MAX_TEXT)))
				return mc_err_set(err, MC_EPLUGIN, "parameter '%s': choice %d %s%s",
						  d->name, k + 1, why,
						  k ? " (or the choices lack their NULL)" : "");
		}
		if (enum_like && k == 0)
			return mc_err_set(err, MC_EPLUGIN, "enum parameter '%s' has no choices",
					  d->name);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct extent {
	size_t lo, hi;
	const char *name;
};

static int cmp_extent(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A row's name: NAME, or BLOCK.NAME for a key of a block (given in a
 * pipeline as BLOCK: {NAME: value}, such as checkpoint.every). */
static int param_name_valid(const char *s)
{
	const char *dot = strchr(s, '.');
	char head[MC_PARAM_MAX_NAME + 1];
	size_t n = dot ? (size_t)(dot - s) : 0;

	if (!dot)
		return mc_name_valid(s, MC_PARAM_MAX_NAME);
	if (n > MC_PARAM_MAX_NAME || strlen(s) > MC_PARAM_MAX_NAME)
		return 0;
	memcpy(head, s, n);
	head[n] = '\0';
	return mc_name_valid(head, MC_PARAM_MAX_NAME) && mc_name_valid(dot + 1, MC_PARAM_MAX_NAME);
}

int mc_param_check_table(const struct mc_param_def *defs, size_t conf_size,
			 size_t (*span)(void *arg, const void *p), void *arg, struct mc_err *err)
{
	const struct table_reader rd = { span, arg };
	const char *names[MC_PARAM_MAX_ROWS], *why;
	struct extent ext[MC_PARAM_MAX_ROWS];
	int n;

	if (!defs)
		return 0;
	for (n = 0;; n++) {
		const struct mc_param_def *d = &defs[n];

		if (reader_span(&rd, d) < sizeof(*d)) {
			if (n)
				return mc_err_set(err, MC_EPLUGIN,
						  "the parameter table runs out of the plugin's "
						  "memory after row %d ('%s'): it lacks "
						  "MC_PARAM_END",
						  n, defs[n - 1].name);
			return mc_err_set(err, MC_EPLUGIN, "the parameter table lies outside "
					  "the plugin's memory; point params at a static table");
		}
		if (!d->name)
			break;
		if (n == MC_PARAM_MAX_ROWS)
			return mc_err_set(err, MC_EPLUGIN, "the parameter table has no "
					  "MC_PARAM_END within %d rows", MC_PARAM_MAX_ROWS);
		why = check_string(&rd, d->name, MC_PARAM_MAX_NAME);
		if (why)
			return mc_err_set(err, MC_EPLUGIN, "the name of parameter %d %s%s", n + 1,
					  why, n ? " (or the table lacks MC_PARAM_END)" : "");
		if (!param_name_valid(d->name))
			return mc_err_set(err, MC_EPLUGIN, "parameter %d is named '%s'; a name "
					  "has 1 to %d of a-z, 0-9, '_' and '-' (not first), or "
					  "is two such names joined by '.' (a key of a block)",
					  n + 1, d->name, MC_PARAM_MAX_NAME);
		if (check_row(&rd, d, conf_size, err))
			return err->code;
		names[n] = d->name;
		field_layout(d->type, &ext[n].lo, &ext[n].hi);
		ext[n].hi = d->offset + ext[n].lo;
		ext[n].lo = d->offset;
		ext[n].name = d->name;
	}
	/* Sorted, a repeat or an overlap is between neighbours: n log n. */
	qsort(names, (size_t)n, sizeof(*names), cmp_str);
	for (int i = 1; i < n; i++)
		if (!strcmp(names[i - 1], names[i]))
			return mc_err_set(err, MC_EPLUGIN, "parameter '%s' is declared twice",
					  names[i]);
	qsort(ext, (size_t)n, sizeof(*ext), cmp_extent);
	for (int i = 1; i < n; i++)
		if (ext[i].lo < ext[i - 1].hi)
			return mc_err_set(err, MC_EPLUGIN, "parameters '%s' and '%s' share bytes "
					  "of the config struct (offsets %zu and %zu); give each "
					  "its own field", ext[i - 1].name, ext[i].name,
					  ext[i - 1].lo, ext[i].lo);
	return 0;
}
