/* SPDX-License-Identifier: MIT */
/*
 * blocks.c - the blocks: section: layer lists with typed parameters, defined
 * once and used in a model's build: like ops (docs/pipelines.md, "Blocks").
 *
 *	blocks:
 *	  basic:
 *	    params: {out: int, stride: 1}
 *	    layers:
 *	      - {conv2d: {out: $out, stride: $stride, padding: 1}, name: conv1}
 *	      - ...
 *	      - {add: {}, inputs: [bn2, input], when: $stride == 1 && $in == $out}
 *
 * This file reads the definitions (each parameter's type and default), checks
 * what can be checked without a use (the kinds of the layers, the "$"
 * expressions against the parameters and their types, that no block uses
 * itself), binds a use's arguments to the parameters, and copies a template's
 * layers with each "$" scalar replaced by its value. layers.c reads the
 * copies as it reads any layer list, into the graph.
 *
 * An expression is a whole scalar containing '$': "$out" alone stands for the
 * argument as given (any type); otherwise integers, floats and booleans with
 * + - * / % (integer division on integers), comparisons, && || ! and
 * parentheses. "$in" is the channel count of the block's input.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mcomp/pipeline.h>

#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

static const char *const type_names[] = {"int", "float", "bool", "string", NULL};
static const char *const block_keys[] = {"params", "layers", NULL};
static const char *const param_keys[] = {"type", "default", NULL};

/* Argument values of one use of a block (arena), in the order of its params. */
struct mc_pl_env {
	const struct mc_pl_block *b;
	struct mc_pl_val *v; /* NULL: checking the template alone, values unknown */
	int64_t in;	     /* channels of the block's input */
};

/* ---------------------------------------------------------------- values */

static const char *type_text(enum mc_pl_type t)
{
	static const char *const what[] = {"an int", "a float", "a bool", "a string"};

	return what[t];
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no",
									       "off"};

	for (int i = 0; i < 3; i++) {
		if (!strcasecmp(s, yes[i]))
			return *out = 1, 0;
		if (!strcasecmp(s, no[i]))
			return *out = 0, 0;
	}
	return -1;
}

/* The value of scalar y as type t into *v: 0, else -1 (reported with what). */
static int read_value(struct ld *l, const struct mc_ynode *y, enum mc_pl_type t,
		      struct mc_pl_val *v, const char *what)
{
	const char *s;
	char *end;

	if (y->kind != MC_YSCALAR || mc_ynode_is_null(y)) {
		bad(l, y, "%s: expected %s, got %s", what, type_text(t), mc_ynode_what(y));
		return -1;
	}
	s = y->value;
	memset(v, 0, sizeof(*v));
	v->type = t;
	v->plain = y->plain;
	if (t == MC_PL_STRING) {
		v->s = s;
		return 0;
	}
	if (!y->plain) {
		bad(l, y, "%s: expected %s, got the quoted string '%s'; remove the quotes", what,
		    type_text(t), s);
		return -1;
	}
	errno = 0;
	if (t == MC_PL_INT) {
		long long i = strtoll(s, &end, 10);

		if (!*s || *end || errno == ERANGE || i < -MC_PL_INT_MAX || i > MC_PL_INT_MAX ||
		    strchr(s, '+')) {
			bad(l, y, "%s: expected an int (at most %d in size), got '%s'", what,
			    MC_PL_INT_MAX, s);
			return -1;
		}
		v->i = i;
	} else if (t == MC_PL_FLOAT) {
		v->f = strtod(s, &end);
		if (!*s || *end || !isfinite(v->f)) {
			bad(l, y, "%s: expected a float, got '%s'", what, s);
			return -1;
		}
	} else if (parse_bool(s, &v->b)) {
		bad(l, y, "%s: expected a bool (true or false), got '%s'", what, s);
		return -1;
	}
	return 0;
}

/* v as YAML text, in the arena. */
static char *value_text(struct ld *l, const struct mc_pl_val *v)
{
	char buf[64];

	switch (v->type) {
	case MC_PL_INT:
		snprintf(buf, sizeof(buf), "%lld", (long long)v->i);
		break;
	case MC_PL_FLOAT:
		/* the shortest text that reads back the same double */
		for (int prec = 6; prec <= 17; prec++) {
			snprintf(buf, sizeof(buf), "%.*g", prec, v->f);
			if (strtod(buf, NULL) == v->f)
				break;
		}
		/* "2" would read back as an int */
		if (!strpbrk(buf, ".eEn"))
			strcat(buf, ".0");
		break;
	case MC_PL_BOOL:
		snprintf(buf, sizeof(buf), "%s", v->b ? "true" : "false");
		break;
	default:
		return (char *)v->s;
	}
	return mc_ydoc_strdup(l->doc, buf);
}

/* ---------------------------------------------------------------- expressions */

struct ex {
	struct ld *l;
	const struct mc_ynode *at; /* the scalar, for messages */
	const struct mc_pl_env *env;
	const char *where;
	const char *p; /* the next character */
	int failed;
};

static void ex_bad(struct ex *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ex_bad(struct ex *e, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (e->failed++)
		return; /* the first error of an expression is the one to fix */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bad(e->l, e->at, "%s'%s': %s", e->where, e->at->value, msg);
}

static void skip_space(struct ex *e)
{
	while (*e->p == ' ' || *e->p == '\t')
		e->p++;
}

/* Takes op (one or two characters) when it comes next. */
static int take(struct ex *e, const char *op)
{
	size_t n = strlen(op);

	skip_space(e);
	if (strncmp(e->p, op, n))
		return 0;
	/* '<' is not the start of "<=", '!' not of "!=", '=' never alone */
	if (n == 1 && strchr("<>!", op[0]) && e->p[1] == '=')
		return 0;
	e->p += n;
	return 1;
}

static int is_num(const struct mc_pl_val *v)
{
	return v->type == MC_PL_INT || v->type == MC_PL_FLOAT;
}

static double as_double(const struct mc_pl_val *v)
{
	return v->type == MC_PL_INT ? (double)v->i : v->f;
}

static struct mc_pl_val ex_or(struct ex *e);

/* The value of parameter name (or "in") under e->env. */
static struct mc_pl_val ex_var(struct ex *e, const char *name, size_t n)
{
	const struct mc_pl_block *b = e->env->b;
	struct mc_pl_val v = {.type = MC_PL_INT, .i = 1};
	char word[64];
	const char **names;

	snprintf(word, sizeof(word), "%.*s", (int)(n < 63 ? n : 63), name);
	if (!strcmp(word, "in")) {
		v.i = e->env->v ? e->env->in : 1;
		return v;
	}
	for (int i = 0; i < b->n_params; i++) {
		if (strcmp(b->params[i].name, word))
			continue;
		if (e->env->v)
			return e->env->v[i];
		/* checking the template: any value of the parameter's type */
		v.type = b->params[i].type;
		v.f = 1;
		v.b = 1;
		v.s = "";
		return v;
	}
	names = mc_ydoc_alloc(e->l->doc, sizeof(*names) * ((size_t)b->n_params + 2));
	if (names) {
		for (int i = 0; i < b->n_params; i++)
			names[i] = b->params[i].name;
		names[b->n_params] = "in";
	}
	if (names && mc_suggest(names, word)) {
		ex_bad(e, "unknown parameter '$%s'; did you mean '$%s'?", word,
		       mc_suggest(names, word));
	} else {
		char list[512];

		ex_bad(e, "unknown parameter '$%s'; the block has %s", word,
		       names ? mc_pl_join(names, list, sizeof(list)) : "in");
	}
	return v;
}

static struct mc_pl_val ex_atom(struct ex *e)
{
	struct mc_pl_val v = {.type = MC_PL_INT};
	const char *s;

	skip_space(e);
	s = e->p;
	if (take(e, "(")) {
		v = ex_or(e);
		if (!take(e, ")"))
			ex_bad(e, "a '(' is not closed; add ')'");
		return v;
	}
	if (*s == '$') {
		size_t n = 0;

		s++;
		while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
		       s[n] == '_' || (n && s[n] >= '0' && s[n] <= '9'))
			n++;
		e->p = s + n;
		if (!n) {
			ex_bad(e, "'$' must be followed by a parameter's name");
			return v;
		}
		return ex_var(e, s, n);
	}
	if ((*s >= '0' && *s <= '9') || *s == '.') {
		char *end;
		size_t n = strspn(s, "0123456789");

		errno = 0;
		if (s[n] == '.' || s[n] == 'e' || s[n] == 'E') {
			v.type = MC_PL_FLOAT;
			v.f = strtod(s, &end);
		} else {
			v.i = strtoll(s, &end, 10);
			if (v.i > MC_PL_INT_MAX)
				errno = ERANGE;
		}
		if (errno == ERANGE)
			ex_bad(e, "the number %.*s is too large", (int)(end - s), s);
		e->p = end;
		return v;
	}
	if (!strncmp(s, "true", 4) || !strncmp(s, "false", 5)) {
		v.type = MC_PL_BOOL;
		v.b = s[0] == 't';
		e->p = s + (v.b ? 4 : 5);
		return v;
	}
	if (!*s)
		ex_bad(e, "the expression ends too early");
	else
		ex_bad(e,
		       "unexpected '%.8s'; an expression is made of numbers, $parameters, "
		       "+ - * / %%, comparisons, && || ! and parentheses",
		       s);
	e->p += strlen(e->p);
	return v;
}

static struct mc_pl_val ex_unary(struct ex *e)
{
	struct mc_pl_val v;

	if (take(e, "-")) {
		v = ex_unary(e);
		if (!is_num(&v))
			ex_bad(e, "'-' needs a number, not %s", type_text(v.type));
		v.i = -v.i;
		v.f = -v.f;
		return v;
	}
	if (take(e, "!")) {
		v = ex_unary(e);
		if (v.type != MC_PL_BOOL)
			ex_bad(e, "'!' needs a bool, not %s", type_text(v.type));
		v.b = !v.b;
		return v;
	}
	return ex_atom(e);
}

/* a op b for + - * / % on numbers; checks types and, with values, overflow. */
static struct mc_pl_val arith(struct ex *e, struct mc_pl_val a, char op, struct mc_pl_val b)
{
	struct mc_pl_val r = {.type = MC_PL_INT};
	int64_t i = 0;
	int over = 0;

	if (!is_num(&a) || !is_num(&b)) {
		ex_bad(e, "'%c' needs numbers, not %s and %s", op, type_text(a.type),
		       type_text(b.type));
		return r;
	}
	if (a.type == MC_PL_FLOAT || b.type == MC_PL_FLOAT) {
		double x = as_double(&a), y = as_double(&b);

		if (op == '%') {
			ex_bad(e, "'%%' needs integers");
			return r;
		}
		r.type = MC_PL_FLOAT;
		r.f = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y;
		if (e->env->v && !isfinite(r.f))
			ex_bad(e, "the result is not a finite number");
		return r;
	}
	switch (op) {
	case '+':
		over = __builtin_add_overflow(a.i, b.i, &i);
		break;
	case '-':
		over = __builtin_sub_overflow(a.i, b.i, &i);
		break;
	case '*':
		over = __builtin_mul_overflow(a.i, b.i, &i);
		break;
	default:
		if (!b.i) {
			if (e->env->v)
				ex_bad(e, "division by zero");
			return r;
		}
		i = op == '/' ? a.i / b.i : a.i % b.i;
	}
	if (e->env->v && (over || i > MC_PL_INT_MAX || i < -MC_PL_INT_MAX))
		ex_bad(e, "the result is out of range (at most %d in size)", MC_PL_INT_MAX);
	r.i = i;
	return r;
}

static struct mc_pl_val ex_prod(struct ex *e)
{
	struct mc_pl_val v = ex_unary(e);

	for (;;) {
		char op = take(e, "*") ? '*' : take(e, "/") ? '/' : take(e, "%") ? '%' : 0;

		if (!op)
			return v;
		v = arith(e, v, op, ex_unary(e));
	}
}

static struct mc_pl_val ex_sum(struct ex *e)
{
	struct mc_pl_val v = ex_prod(e);

	for (;;) {
		char op = take(e, "+") ? '+' : take(e, "-") ? '-' : 0;

		if (!op)
			return v;
		v = arith(e, v, op, ex_prod(e));
	}
}

static struct mc_pl_val ex_cmp(struct ex *e)
{
	static const char *const ops[] = {"==", "!=", "<=", ">=", "<", ">", NULL};
	struct mc_pl_val a = ex_sum(e), b, r = {.type = MC_PL_BOOL};
	int k;

	for (k = 0; ops[k] && !take(e, ops[k]); k++)
		;
	if (!ops[k])
		return a;
	b = ex_sum(e);
	if (is_num(&a) && is_num(&b)) {
		double x = as_double(&a), y = as_double(&b);

		if (a.type == MC_PL_INT && b.type == MC_PL_INT) /* exact, whatever the size */
			x = (double)(a.i > b.i) - (double)(a.i < b.i), y = 0;
		r.b = k == 0   ? x == y
		      : k == 1 ? x != y
		      : k == 2 ? x <= y
		      : k == 3 ? x >= y
		      : k == 4 ? x < y
			       : x > y;
	} else if (a.type == b.type && k < 2) {
		int eq = a.type == MC_PL_BOOL ? a.b == b.b : !strcmp(a.s, b.s);

		r.b = k == 0 ? eq : !eq;
	} else {
		ex_bad(e, "'%s' cannot compare %s with %s", ops[k], type_text(a.type),
		       type_text(b.type));
	}
	return r;
}

static struct mc_pl_val logic(struct ex *e, struct mc_pl_val (*next)(struct ex *), const char *op)
{
	struct mc_pl_val v = next(e);

	while (take(e, op)) {
		struct mc_pl_val w = next(e);

		if (v.type != MC_PL_BOOL || w.type != MC_PL_BOOL)
			ex_bad(e, "'%s' needs bools, not %s and %s", op, type_text(v.type),
			       type_text(w.type));
		v.type = MC_PL_BOOL;
		v.b = op[0] == '&' ? v.b && w.b : v.b || w.b;
	}
	return v;
}

static struct mc_pl_val ex_and(struct ex *e)
{
	return logic(e, ex_cmp, "&&");
}

static struct mc_pl_val ex_or(struct ex *e)
{
	return logic(e, ex_and, "||");
}

/*
 * The value of expression scalar y under env (values unknown when env->v is
 * NULL: only names and types are checked). 0, else -1 (reported).
 */
static int evaluate(struct ld *l, const struct mc_ynode *y, const struct mc_pl_env *env,
		    const char *where, struct mc_pl_val *out)
{
	struct ex e = {.l = l, .at = y, .env = env, .where = where, .p = y->value};
	const char *s = y->value + strspn(y->value, " \t"), *name;
	size_t n;

	/* "$name" alone: the argument as given, of any type */
	name = s + 1;
	n = strcspn(name, " \t");
	if (s[0] == '$' && n && !name[n + strspn(name + n, " \t")] &&
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") == n &&
	    !(name[0] >= '0' && name[0] <= '9')) {
		*out = ex_var(&e, name, n);
		return e.failed ? -1 : 0;
	}
	*out = ex_or(&e);
	skip_space(&e);
	if (!e.failed && *e.p)
		ex_bad(&e, "unexpected '%.8s' after the expression", e.p);
	if (!e.failed && out->type == MC_PL_STRING)
		ex_bad(&e, "a string parameter can only stand alone ('$name')");
	return e.failed ? -1 : 0;
}

static int has_dollar(const struct mc_ynode *y)
{
	return y->kind == MC_YSCALAR && strchr(y->value, '$');
}

const struct mc_ynode *mc_pl_subst(struct ld *l, const struct mc_ynode *y,
				   const struct mc_pl_env *env, const char *where)
{
	struct mc_ynode *c = NULL;
	int failed = 0;

	if (y->kind == MC_YSCALAR) {
		struct mc_pl_val v;

		if (!has_dollar(y))
			return y;
		if (evaluate(l, y, env, where, &v))
			return NULL;
		c = mc_ynode_clone(l->doc, y);
		if (!c || !(c->value = value_text(l, &v))) {
			bad(l, y, "out of memory");
			return NULL;
		}
		/* checked values read as what they are; a string keeps its quoting */
		c->plain = v.type == MC_PL_STRING ? v.plain : 1;
		c->tag = NULL;
		return c;
	}
	for (int i = 0; i < y->n; i++) {
		const struct mc_ynode *s = mc_pl_subst(l, y->items[i], env, where);

		if (!s) {
			failed = 1;
			continue;
		}
		if (s == y->items[i])
			continue;
		if (!c && !(c = mc_ynode_clone(l->doc, y))) {
			bad(l, y, "out of memory");
			return NULL;
		}
		c->items[i] = (struct mc_ynode *)s;
	}
	if (failed)
		return NULL;
	return c ? c : y;
}

int mc_pl_want_when(struct ld *l, const struct mc_ynode *y, const char *where)
{
	int b;

	if (y->kind != MC_YSCALAR || !y->plain || parse_bool(y->value, &b)) {
		bad(l, y,
		    "%swhen: expected a bool (true, false, or a comparison such as "
		    "'$stride == 1'), got %s%s%s",
		    where, y->kind == MC_YSCALAR ? "'" : "",
		    y->kind == MC_YSCALAR ? y->value : mc_ynode_what(y),
		    y->kind == MC_YSCALAR ? "'" : "");
		return -1;
	}
	return b;
}

/* ---------------------------------------------------------------- uses */

static const struct mc_pl_bparam *find_param(const struct mc_pl_block *b, const char *name)
{
	for (int i = 0; i < b->n_params; i++)
		if (!strcmp(b->params[i].name, name))
			return &b->params[i];
	return NULL;
}

static void unknown_param(struct ld *l, const struct mc_pl_block *b, const struct mc_ynode *k,
			  const char *where)
{
	const char **names = mc_ydoc_alloc(l->doc, sizeof(*names) * ((size_t)b->n_params + 1));
	char list[512];
	const char *near;

	if (!names) {
		bad(l, k, "out of memory");
		return;
	}
	for (int i = 0; i < b->n_params; i++)
		names[i] = b->params[i].name;
	near = mc_suggest(names, k->value);
	if (near)
		bad(l, k, "%sunknown parameter '%s' of block '%s'; did you mean '%s'?", where,
		    k->value, b->name, near);
	else if (b->n_params)
		bad(l, k, "%sunknown parameter '%s' of block '%s'; its parameters are %s", where,
		    k->value, b->name, mc_pl_join(names, list, sizeof(list)));
	else
		bad(l, k, "%sunknown parameter '%s': block '%s' takes no parameters", where,
		    k->value, b->name);
}

/* Sets the arguments given in map args (a mapping, checked) into v. */
static int bind_map(struct ld *l, const struct mc_pl_block *b, const struct mc_ynode *args,
		    struct mc_pl_val *v, int *given, const char *where)
{
	int ok = 1;

	for (int i = 0; i < args->n; i++) {
		const struct mc_pl_bparam *p = find_param(b, args->keys[i]->value);
		char what[300];

		if (!p) {
			unknown_param(l, b, args->keys[i], where);
			ok = 0;
			continue;
		}
		snprintf(what, sizeof(what), "%sblock '%s': %s", where, b->name, p->name);
		if (read_value(l, args->items[i], p->type, &v[p - b->params], what))
			ok = 0;
		given[p - b->params] = 1;
	}
	return ok;
}

struct mc_pl_env *mc_pl_block_bind(struct ld *l, const struct mc_pl_block *b,
				   const struct mc_ynode *at, const struct mc_ynode *args,
				   const struct mc_ynode *first, int64_t in, const char *where)
{
	struct mc_pl_env *env = mc_ydoc_alloc(l->doc, sizeof(*env));
	int *given = mc_ydoc_alloc(l->doc, sizeof(int) * ((size_t)b->n_params + 1));
	int ok = 1;

	if (!env || !given ||
	    !(env->v = mc_ydoc_alloc(l->doc, sizeof(*env->v) * ((size_t)b->n_params + 1)))) {
		bad(l, at, "out of memory");
		return NULL;
	}
	env->b = b;
	env->in = in;
	if (args && !mc_ynode_is_null(args)) {
		if (args->kind == MC_YMAP) {
			ok = bind_map(l, b, args, env->v, given, where);
		} else if (args->kind == MC_YSCALAR && b->n_params) {
			/* a scalar sets the first parameter, as for ops */
			char what[300];

			snprintf(what, sizeof(what), "%sblock '%s': %s", where, b->name,
				 b->params[0].name);
			ok = !read_value(l, args, b->params[0].type, &env->v[0], what);
			given[0] = 1;
		} else {
			bad(l, args, "%sblock '%s' %s", where, b->name,
			    b->n_params ? "takes its parameters as a mapping such as {out: 32}"
					: "takes no parameters");
			ok = 0;
		}
	}
	if (first && ok)
		ok = bind_map(l, b, first, env->v, given, where);
	for (int i = 0; i < b->n_params; i++) {
		const struct mc_pl_bparam *p = &b->params[i];

		if (given[i])
			continue;
		if (p->def) {
			env->v[i] = p->value;
			continue;
		}
		if (ok)
			bad(l, at, "%sblock '%s': missing required parameter '%s' (%s)", where,
			    b->name, p->name, type_names[p->type]);
		ok = 0;
	}
	return ok ? env : NULL;
}

/* ---------------------------------------------------------------- definitions */

const struct mc_pl_block *mc_pl_block_find(const struct ld *l, const char *name)
{
	for (int i = 0; l->blocks && i < l->blocks->n; i++)
		if (!strcmp(l->blocks->b[i].name, name))
			return &l->blocks->b[i];
	return NULL;
}

/* The op or block name of a layer item (its one key beside name/inputs/...), or NULL. */
const struct mc_ynode *mc_pl_layer_kind(const struct mc_ynode *y)
{
	static const char *const beside[] = {"name", "inputs", "when", "repeat", "first", NULL};

	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y))
		return y;
	if (y->kind != MC_YMAP)
		return NULL;
	for (int i = 0; i < y->n; i++) {
		int other = 0;

		for (int k = 0; beside[k]; k++)
			other |= !strcmp(y->keys[i]->value, beside[k]);
		if (!other)
			return y->keys[i];
	}
	return NULL;
}

const char *const *mc_pl_layer_kinds(struct ld *l)
{
	const char *const *ops = mc_op_names();
	int n_ops = 0, n_b = l->blocks ? l->blocks->n : 0;
	const char **all;

	while (ops[n_ops])
		n_ops++;
	all = mc_ydoc_alloc(l->doc, sizeof(*all) * ((size_t)n_ops + (size_t)n_b + 1));
	if (!all)
		return ops;
	memcpy(all, ops, sizeof(*all) * (size_t)n_ops);
	for (int i = 0; i < n_b; i++)
		all[n_ops + i] = l->blocks->b[i].name;
	return all;
}

static int is_ident(const char *s)
{
	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") ==
	       strlen(s);
}

/* One parameter declaration: "name: TYPE", "name: DEFAULT" or "name: {type:, default:}". */
static int load_param(struct ld *l, struct mc_pl_block *b, const struct mc_ynode *k,
		      const struct mc_ynode *v, struct mc_pl_bparam *p)
{
	const struct mc_ynode *ty = NULL, *def = NULL;
	char what[300];
	int t;

	p->name = k->value;
	p->at = k;
	if (!is_ident(k->value)) {
		bad(l, k,
		    "block '%s': '%s' is not a usable parameter name; use letters, digits "
		    "and '_', starting with a letter",
		    b->name, k->value);
		return -1;
	}
	if (!strcmp(k->value, "in")) {
		bad(l, k,
		    "block '%s': 'in' is the channel count of the block's input ($in); "
		    "name the parameter otherwise",
		    b->name);
		return -1;
	}
	if (v->kind == MC_YMAP) {
		mc_pl_check_keys(l, v, param_keys, "a block parameter");
		ty = mc_ymap_get(v, "type", NULL);
		def = mc_ymap_get(v, "default", NULL);
		if (!ty) {
			bad(l, v,
			    "block '%s': parameter '%s': missing required key 'type' (int, "
			    "float, bool or string)",
			    b->name, p->name);
			return -1;
		}
	} else if (v->kind == MC_YSCALAR && !mc_ynode_is_null(v)) {
		for (t = 0; type_names[t] && strcmp(type_names[t], v->value); t++)
			;
		if (type_names[t] && v->plain) {
			ty = v; /* a type: the parameter is required */
		} else {
			def = v; /* a default, whose form gives the type */
			p->type = MC_PL_STRING;
			if (v->plain) {
				char *end;

				errno = 0;
				strtoll(v->value, &end, 10);
				if (*v->value && !*end)
					p->type = MC_PL_INT;
				else if (strtod(v->value, &end), *v->value && !*end)
					p->type = MC_PL_FLOAT;
				else if (!parse_bool(v->value, &t))
					p->type = MC_PL_BOOL;
			}
		}
	} else {
		bad(l, v,
		    "block '%s': parameter '%s' must be a type (int, float, bool, string), "
		    "a default value, or {type: TYPE, default: VALUE}, not %s",
		    b->name, p->name, mc_ynode_what(v));
		return -1;
	}
	if (ty) {
		const char *s = mc_pl_want_scalar(l, ty, "a parameter's type");
		const char *near;

		if (!s)
			return -1;
		for (t = 0; type_names[t] && strcmp(type_names[t], s); t++)
			;
		if (!type_names[t]) {
			near = mc_suggest(type_names, s);
			bad(l, ty, "block '%s': parameter '%s': unknown type '%s'; %s%s%s", b->name,
			    p->name, s,
			    near ? "did you mean '"
				 : "the types are int, float, bool "
				   "and string",
			    near ? near : "", near ? "'?" : "");
			return -1;
		}
		p->type = (enum mc_pl_type)t;
	}
	if (def) {
		snprintf(what, sizeof(what), "block '%s': parameter '%s': default", b->name,
			 p->name);
		if (read_value(l, def, p->type, &p->value, what))
			return -1;
		p->def = def;
	}
	return 0;
}

/* Checks every "$" scalar of the template y against block b's parameters. */
static int check_exprs(struct ld *l, const struct mc_pl_block *b, const struct mc_ynode *y,
		       const char *where)
{
	struct mc_pl_env env = {.b = b};
	struct mc_pl_val v;
	int ok = 1;

	if (has_dollar(y))
		return evaluate(l, y, &env, where, &v) ? 0 : 1;
	for (int i = 0; i < y->n && y->kind != MC_YSCALAR; i++)
		ok &= check_exprs(l, b, y->items[i], where);
	return ok;
}

/* The kinds of the template's layers: ops or blocks; 0 when one is neither (reported). */
static int check_kinds(struct ld *l, struct mc_pl_block *b)
{
	char where[300], list[1024];
	int ok = 1;

	for (int i = 0; i < b->layers->n; i++) {
		const struct mc_ynode *k = mc_pl_layer_kind(b->layers->items[i]);
		const char *near;

		if (!k || mc_op_find(k->value) || mc_pl_block_find(l, k->value))
			continue; /* no kind: reported where the layer is read */
		snprintf(where, sizeof(where), "block '%s', layer %d", b->name, i + 1);
		near = mc_suggest(mc_pl_layer_kinds(l), k->value);
		if (near)
			bad(l, k, "%s: unknown op or block '%s'; did you mean '%s'?", where,
			    k->value, near);
		else
			bad(l, k, "%s: unknown op or block '%s'; the ops are %s", where, k->value,
			    mc_pl_join(mc_op_names(), list, sizeof(list)));
		ok = 0;
	}
	return ok;
}

/*
 * Depth-first over the uses of blocks in templates: a block that uses itself,
 * directly or through others, is reported at the use that closes the cycle,
 * with the path. mark: 0 unseen, 1 on the path, 2 done.
 */
static void find_cycles(struct ld *l, struct mc_pl_block *b, const struct mc_pl_block **path,
			int depth)
{
	b->mark = 1;
	path[depth] = b;
	for (int i = 0; i < b->layers->n; i++) {
		const struct mc_ynode *k = mc_pl_layer_kind(b->layers->items[i]);
		struct mc_pl_block *u =
		    k ? (struct mc_pl_block *)mc_pl_block_find(l, k->value) : NULL;
		char chain[1024];
		size_t pos = 0;
		int from = 0;

		if (!u || !u->layers || u->mark == 2)
			continue;
		if (u->mark == 0) {
			find_cycles(l, u, path, depth + 1);
			continue;
		}
		while (path[from] != u)
			from++;
		chain[0] = '\0';
		for (int j = from; j <= depth && pos < sizeof(chain); j++)
			pos += (size_t)snprintf(chain + pos, sizeof(chain) - pos, "%s -> ",
						path[j]->name);
		if (pos < sizeof(chain))
			snprintf(chain + pos, sizeof(chain) - pos, "%s", u->name);
		bad(l, k, "block '%s' uses block '%s' (%s): a block may not use itself", b->name,
		    u->name, chain);
		for (int j = from; j <= depth; j++)
			((struct mc_pl_block *)path[j])->usable = 0;
	}
	b->mark = 2;
}

void mc_pl_load_blocks(struct ld *l, const struct mc_ynode *blocks)
{
	struct mc_pl_blocks *bs;
	const struct mc_pl_block **path;

	if (!blocks || mc_ynode_is_null(blocks) || !mc_pl_want_map(l, blocks, "blocks"))
		return;
	bs = mc_ydoc_alloc(l->doc, sizeof(*bs));
	if (!bs || !(bs->b = mc_ydoc_alloc(l->doc, sizeof(*bs->b) * ((size_t)blocks->n + 1)))) {
		bad(l, blocks, "out of memory");
		return;
	}
	l->blocks = bs;
	for (int i = 0; i < blocks->n; i++) {
		const struct mc_ynode *k = blocks->keys[i], *v = blocks->items[i], *ps;
		struct mc_pl_block *b = &bs->b[bs->n];
		char where[300];

		if (!mc_pl_valid_name(k->value)) {
			bad(l, k,
			    "'%s' is not a usable block name; use letters, digits, '_' and "
			    "'-'",
			    k->value);
			continue;
		}
		if (mc_op_find(k->value)) {
			bad(l, k, "block '%s' has the name of an op; name it otherwise", k->value);
			continue;
		}
		snprintf(where, sizeof(where), "block '%s'", k->value);
		if (!mc_pl_want_map(l, v, where))
			continue;
		b->name = k->value;
		b->key = k;
		b->usable = 1;
		bs->n++;
		mc_pl_check_keys(l, v, block_keys, where);
		b->layers = mc_ymap_get(v, "layers", NULL);
		if (!b->layers || b->layers->kind != MC_YSEQ || !b->layers->n) {
			bad(l, b->layers ? b->layers : v, "%s: %s", where,
			    b->layers ? "layers must be a non-empty list of layers"
				      : "missing required key 'layers' (the block's layer list)");
			b->usable = 0;
			b->layers = NULL;
			continue;
		}
		ps = mc_ymap_get(v, "params", NULL);
		if (!ps || mc_ynode_is_null(ps))
			continue;
		if (!mc_pl_want_map(l, ps, "a block's params")) {
			b->usable = 0;
			continue;
		}
		b->params = mc_ydoc_alloc(l->doc, sizeof(*b->params) * ((size_t)ps->n + 1));
		if (!b->params) {
			bad(l, ps, "out of memory");
			b->usable = 0;
			continue;
		}
		for (int j = 0; j < ps->n; j++)
			if (load_param(l, b, ps->keys[j], ps->items[j], &b->params[b->n_params++]))
				b->usable = 0;
	}
	/* What needs every block known: kinds, expressions, cycles. */
	for (int i = 0; i < bs->n; i++) {
		struct mc_pl_block *b = &bs->b[i];
		char where[300];

		if (!b->layers)
			continue;
		snprintf(where, sizeof(where), "block '%s': ", b->name);
		if (!check_kinds(l, b) || (b->usable && !check_exprs(l, b, b->layers, where)))
			b->usable = 0;
	}
	path = mc_ydoc_alloc(l->doc, sizeof(*path) * ((size_t)bs->n + 1));
	if (!path) {
		bad(l, blocks, "out of memory");
		return;
	}
	for (int i = 0; i < bs->n; i++)
		if (bs->b[i].layers && !bs->b[i].mark)
			find_cycles(l, &bs->b[i], path, 0);
}
