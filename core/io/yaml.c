/* SPDX-License-Identifier: MIT */
/*
 * yaml.c - YAML documents as node trees with places, from libyaml's events.
 *
 * The tree is built with yaml_parser_parse() rather than libyaml's loader so
 * that aliases are shared instead of copied, their expanded size is counted
 * before anything is expanded, and every node keeps its start mark.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "io/ydoc.h"

/* ---------------------------------------------------------------- errors */

static void errlist_vadd(struct mc_errlist *el, const char *file, int line, int col,
			 const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

static void errlist_vadd(struct mc_errlist *el, const char *file, int line, int col,
			 const char *fmt, va_list ap)
{
	struct mc_err *err = el->err;
	size_t pos;

	el->n++;
	if (!err)
		return;
	err->code = MC_EINVAL;
	if (el->n == 1)
		err->msg[0] = '\0';
	if (el->n > MC_ERRLIST_MAX + 1)
		return;
	pos = strlen(err->msg);
	if (el->n == MC_ERRLIST_MAX + 1) {
		snprintf(err->msg + pos, sizeof(err->msg) - pos,
			 "\n%s: more errors not shown; fix these first", file);
		return;
	}
	if (el->n > 1 && pos + 1 < sizeof(err->msg))
		err->msg[pos++] = '\n';
	if (line > 0)
		pos += (size_t)snprintf(err->msg + pos, sizeof(err->msg) - pos, "%s:%d:%d: ", file,
					line, col);
	else
		pos += (size_t)snprintf(err->msg + pos, sizeof(err->msg) - pos, "%s: ", file);
	if (pos < sizeof(err->msg))
		vsnprintf(err->msg + pos, sizeof(err->msg) - pos, fmt, ap);
}

void mc_errlist_add(struct mc_errlist *el, const char *file, int line, int col, const char *fmt,
		    ...)
{
	va_list ap;

	va_start(ap, fmt);
	errlist_vadd(el, file, line, col, fmt, ap);
	va_end(ap);
}

void mc_errlist_at(struct mc_errlist *el, const struct mc_ynode *y, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errlist_vadd(el, y->file, y->line, y->col, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- arena */

struct chunk {
	struct chunk *next;
	size_t used, size;
	_Alignas(16) unsigned char data[];
};

struct mc_ydoc {
	struct chunk *chunks;
};

struct mc_ydoc *mc_ydoc_new(void)
{
	return calloc(1, sizeof(struct mc_ydoc));
}

void mc_ydoc_free(struct mc_ydoc *d)
{
	struct chunk *c, *next;

	if (!d)
		return;
	for (c = d->chunks; c; c = next) {
		next = c->next;
		free(c);
	}
	free(d);
}

void *mc_ydoc_alloc(struct mc_ydoc *d, size_t size)
{
	struct chunk *c = d->chunks;
	void *p;

	if (size > SIZE_MAX / 2)
		return NULL;
	size = (size + 15) & ~(size_t)15;
	if (!c || c->size - c->used < size) {
		size_t want = size > 65536 ? size : 65536;

		c = malloc(sizeof(*c) + want);
		if (!c)
			return NULL;
		c->size = want;
		c->used = 0;
		c->next = d->chunks;
		d->chunks = c;
	}
	p = c->data + c->used;
	c->used += size;
	memset(p, 0, size);
	return p;
}

static char *ydoc_strndup(struct mc_ydoc *d, const char *s, size_t n)
{
	char *p;

	if (n == SIZE_MAX)
		return NULL;
	p = mc_ydoc_alloc(d, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

char *mc_ydoc_strdup(struct mc_ydoc *d, const char *s)
{
	return ydoc_strndup(d, s, strlen(s));
}

/* ---------------------------------------------------------------- nodes */

struct mc_ynode *mc_ynode_new(struct mc_ydoc *d, enum mc_ykind kind, const char *file)
{
	struct mc_ynode *y = mc_ydoc_alloc(d, sizeof(*y));

	if (!y)
		return NULL;
	y->kind = kind;
	y->file = file;
	y->size = 1;
	y->done = 1;
	if (kind == MC_YSCALAR)
		y->value = "";
	return y;
}

static int grow(struct mc_ydoc *d, struct mc_ynode *c)
{
	int cap = c->cap ? c->cap * 2 : 4;
	struct mc_ynode **items, **keys = NULL;

	if (c->cap > (1 << 28))
		return MC_ENOMEM;
	items = mc_ydoc_alloc(d, sizeof(*items) * (size_t)cap);
	if (!items)
		return MC_ENOMEM;
	if (c->kind == MC_YMAP) {
		keys = mc_ydoc_alloc(d, sizeof(*keys) * (size_t)cap);
		if (!keys)
			return MC_ENOMEM;
		if (c->n)
			memcpy(keys, c->keys, sizeof(*keys) * (size_t)c->n);
	}
	if (c->n)
		memcpy(items, c->items, sizeof(*items) * (size_t)c->n);
	c->items = items;
	c->keys = keys;
	c->cap = cap;
	return 0;
}

int mc_ynode_append(struct mc_ydoc *d, struct mc_ynode *c, struct mc_ynode *key,
		    struct mc_ynode *val)
{
	if (c->n == c->cap && grow(d, c))
		return MC_ENOMEM;
	if (c->kind == MC_YMAP)
		c->keys[c->n] = key;
	c->items[c->n++] = val;
	return 0;
}

struct mc_ynode *mc_ynode_clone(struct mc_ydoc *d, const struct mc_ynode *y)
{
	struct mc_ynode *c = mc_ydoc_alloc(d, sizeof(*c));

	if (!c)
		return NULL;
	*c = *y;
	c->n = c->cap = 0;
	c->items = c->keys = NULL;
	for (int i = 0; i < y->n; i++)
		if (mc_ynode_append(d, c, y->keys ? y->keys[i] : NULL, y->items[i]))
			return NULL;
	return c;
}

struct mc_ynode *mc_ymap_get(const struct mc_ynode *m, const char *key, struct mc_ynode **keyp)
{
	if (!m || m->kind != MC_YMAP)
		return NULL;
	for (int i = 0; i < m->n; i++) {
		if (!strcmp(m->keys[i]->value, key)) {
			if (keyp)
				*keyp = m->keys[i];
			return m->items[i];
		}
	}
	return NULL;
}

int mc_ynode_is_null(const struct mc_ynode *y)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (!y || y->kind != MC_YSCALAR || !y->plain)
		return 0;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (!strcmp(y->value, nulls[i]))
			return 1;
	return 0;
}

const char *mc_ynode_what(const struct mc_ynode *y)
{
	if (!y)
		return "nothing";
	if (y->kind == MC_YMAP)
		return "a mapping";
	if (y->kind == MC_YSEQ)
		return "a sequence";
	if (mc_ynode_is_null(y))
		return "null";
	return "a scalar";
}

/* ---------------------------------------------------------------- the parser */

#define ANCHOR_BUCKETS 1024

struct anchor {
	struct anchor *next;
	char *name;
	struct mc_ynode *node;
};

struct frame {
	struct mc_ynode *node;
	struct mc_ynode *key; /* of a mapping: the key awaiting its value */
};

struct builder {
	struct mc_ydoc *d;
	struct mc_errlist *el;
	const char *file;
	int lines;
	struct frame *stack;
	int depth, cap;
	struct mc_ynode *root;
	int docs;
	struct anchor *anchors[ANCHOR_BUCKETS];
	int failed; /* a fatal error: stop parsing */
};

static unsigned hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % ANCHOR_BUCKETS;
}

static int add_anchor(struct builder *b, const char *name, struct mc_ynode *y)
{
	struct anchor *a = mc_ydoc_alloc(b->d, sizeof(*a));
	unsigned h = hash(name);

	if (!a || !(a->name = mc_ydoc_strdup(b->d, name)))
		return MC_ENOMEM;
	a->node = y;
	/* Newest first: a redefined anchor refers to its latest node. */
	a->next = b->anchors[h];
	b->anchors[h] = a;
	return 0;
}

static struct mc_ynode *find_anchor(struct builder *b, const char *name)
{
	for (struct anchor *a = b->anchors[hash(name)]; a; a = a->next)
		if (!strcmp(a->name, name))
			return a->node;
	return NULL;
}

static void set_place(struct builder *b, struct mc_ynode *y, const yaml_mark_t *m)
{
	if (b->lines) {
		y->line = (int)m->line + 1;
		y->col = (int)m->column + 1;
	}
}

static void fatal_oom(struct builder *b)
{
	mc_errlist_add(b->el, b->file, 0, 0, "out of memory while reading the YAML document");
	b->failed = MC_ENOMEM;
}

static void too_big(struct builder *b, int line, int col)
{
	mc_errlist_add(b->el, b->file, line, col,
		      "the document expands to more than %d nodes (an alias bomb?); refusing "
		      "to expand it",
		      MC_YAML_MAX_NODES);
	b->failed = MC_EINVAL;
}

/*
 * Links y into the open collection on top of the stack (or makes it the
 * root). size says how much of y is already complete and counts now; a
 * collection counts again, in full, when it ends.
 */
static void link_node(struct builder *b, struct mc_ynode *y, uint64_t size, int line, int col)
{
	struct frame *f;

	if (!b->depth) {
		b->root = y;
		return;
	}
	f = &b->stack[b->depth - 1];
	if (f->node->kind == MC_YMAP && !f->key) {
		if (y->kind != MC_YSCALAR) {
			mc_errlist_at(b->el, y, "a mapping key must be a scalar, not %s",
				      mc_ynode_what(y));
			b->failed = MC_EINVAL;
			return;
		}
		f->key = y;
	} else {
		if (mc_ynode_append(b->d, f->node, f->key, y)) {
			fatal_oom(b);
			return;
		}
		f->key = NULL;
	}
	f->node->size += size;
	if (f->node->size > MC_YAML_MAX_NODES)
		too_big(b, line, col);
}

static int cmp_keys(const void *a, const void *b)
{
	const struct mc_ynode *x = *(struct mc_ynode *const *)a, *y = *(struct mc_ynode *const *)b;
	int c = strcmp(x->value, y->value);

	if (c)
		return c;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return (x->col > y->col) - (x->col < y->col);
}

/* Reports each key repeated in mapping m, at the repeat, with the first place. */
static void check_duplicates(struct builder *b, struct mc_ynode *m)
{
	struct mc_ynode **keys;

	if (m->n < 2)
		return;
	keys = mc_ydoc_alloc(b->d, sizeof(*keys) * (size_t)m->n);
	if (!keys) {
		fatal_oom(b);
		return;
	}
	memcpy(keys, m->keys, sizeof(*keys) * (size_t)m->n);
	qsort(keys, (size_t)m->n, sizeof(*keys), cmp_keys);
	for (int i = 1, first = 0; i < m->n; i++) {
		if (strcmp(keys[i]->value, keys[first]->value)) {
			first = i;
			continue;
		}
		mc_errlist_at(b->el, keys[i], "duplicate key '%s' (first at line %d, column %d)",
			      keys[i]->value, keys[first]->line, keys[first]->col);
	}
}

static void on_start(struct builder *b, const yaml_event_t *ev, enum mc_ykind kind,
		     const char *anchor, const char *tag)
{
	struct mc_ynode *y = mc_ynode_new(b->d, kind, b->file);

	if (!y) {
		fatal_oom(b);
		return;
	}
	set_place(b, y, &ev->start_mark);
	y->done = 0;
	if (tag && !(y->tag = mc_ydoc_strdup(b->d, tag))) {
		fatal_oom(b);
		return;
	}
	if (anchor && add_anchor(b, anchor, y)) {
		fatal_oom(b);
		return;
	}
	link_node(b, y, 0, y->line, y->col);
	if (b->failed)
		return;
	/* Refused at the event, before libyaml scans on: its scanner's cost per
	 * token grows with the depth (one possible simple key per flow level),
	 * so 2 MB of '[' would otherwise take about an hour. */
	if (b->depth >= MC_YAML_MAX_DEPTH) {
		mc_errlist_at(b->el, y,
			      "nesting deeper than %d levels of lists and mappings; a pipeline "
			      "needs a few, so this is not one",
			      MC_YAML_MAX_DEPTH);
		b->failed = MC_EINVAL;
		return;
	}
	if (b->depth == b->cap) {
		int cap = b->cap ? b->cap * 2 : 16;
		struct frame *s = realloc(b->stack, sizeof(*s) * (size_t)cap);

		if (!s) {
			fatal_oom(b);
			return;
		}
		b->stack = s;
		b->cap = cap;
	}
	b->stack[b->depth].node = y;
	b->stack[b->depth].key = NULL;
	b->depth++;
}

static void on_end(struct builder *b)
{
	struct mc_ynode *y;

	if (!b->depth)
		return;
	y = b->stack[--b->depth].node;
	y->done = 1;
	if (y->kind == MC_YMAP)
		check_duplicates(b, y);
	if (b->depth) {
		struct mc_ynode *parent = b->stack[b->depth - 1].node;

		parent->size += y->size;
		if (parent->size > MC_YAML_MAX_NODES)
			too_big(b, y->line, y->col);
	}
}

static void on_scalar(struct builder *b, const yaml_event_t *ev)
{
	const char *tag = (const char *)ev->data.scalar.tag;
	const char *anchor = (const char *)ev->data.scalar.anchor;
	const char *v = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	struct mc_ynode *y = mc_ynode_new(b->d, MC_YSCALAR, b->file);

	if (!y) {
		fatal_oom(b);
		return;
	}
	set_place(b, y, &ev->start_mark);
	if (memchr(v, '\0', len)) {
		mc_errlist_at(b->el, y, "a scalar contains a NUL character; remove it");
		b->failed = MC_EINVAL;
		return;
	}
	y->value = ydoc_strndup(b->d, v, len);
	if (!y->value || (tag && !(y->tag = mc_ydoc_strdup(b->d, tag))) ||
	    (anchor && add_anchor(b, anchor, y))) {
		fatal_oom(b);
		return;
	}
	y->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag;
	link_node(b, y, 1, y->line, y->col);
}

static void on_alias(struct builder *b, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	struct mc_ynode *y = find_anchor(b, name);
	int line = b->lines ? (int)ev->start_mark.line + 1 : 0;
	int col = b->lines ? (int)ev->start_mark.column + 1 : 0;

	if (!y) {
		mc_errlist_add(b->el, b->file, line, col, "alias '*%s' names no anchor before it",
			       name);
		b->failed = MC_EINVAL;
		return;
	}
	if (!y->done) {
		mc_errlist_add(b->el, b->file, line, col,
			       "alias '*%s' refers to a node that contains it; recursive "
			       "structures are not allowed",
			       name);
		b->failed = MC_EINVAL;
		return;
	}
	link_node(b, y, y->size, line, col);
}

static void syntax_error(struct builder *b, const yaml_parser_t *parser)
{
	const char *what = parser->problem ? parser->problem : "malformed YAML";
	const yaml_mark_t *m = &parser->problem_mark;
	int line = b->lines ? (int)m->line + 1 : 0;
	int col = b->lines ? (int)m->column + 1 : 0;

	if (!b->lines && parser->context)
		mc_errlist_add(b->el, b->file, 0, 0, "invalid YAML value: %s %s (at column %d)",
			       parser->context, what, (int)m->column + 1);
	else if (!b->lines)
		mc_errlist_add(b->el, b->file, 0, 0, "invalid YAML value: %s (at column %d)", what,
			       (int)m->column + 1);
	else if (parser->context)
		mc_errlist_add(b->el, b->file, line, col,
			       "YAML syntax error: %s (%s that starts at line %d, column %d)", what,
			       parser->context, (int)parser->context_mark.line + 1,
			       (int)parser->context_mark.column + 1);
	else
		mc_errlist_add(b->el, b->file, line, col, "YAML syntax error: %s", what);
	b->failed = MC_EINVAL;
}

int mc_yaml_parse(struct mc_ydoc *d, const char *buf, size_t len, const char *file, int lines,
		  struct mc_ynode **root, struct mc_errlist *el)
{
	struct builder b = { .d = d, .el = el, .lines = lines };
	yaml_parser_t parser;
	yaml_event_t ev;
	int done = 0, n0 = el->n;

	*root = NULL;
	b.file = mc_ydoc_strdup(d, file);
	if (!b.file) {
		mc_errlist_add(el, file, 0, 0, "out of memory");
		return MC_ENOMEM;
	}
	if (!yaml_parser_initialize(&parser)) {
		mc_errlist_add(el, file, 0, 0, "out of memory");
		return MC_ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while (!done && !b.failed) {
		if (!yaml_parser_parse(&parser, &ev)) {
			syntax_error(&b, &parser);
			break;
		}
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++b.docs > 1) {
				mc_errlist_add(el, b.file, lines ? (int)ev.start_mark.line + 1 : 0,
					       lines ? (int)ev.start_mark.column + 1 : 0,
					       "a second YAML document; a pipeline is one document");
				b.failed = MC_EINVAL;
			}
			break;
		case YAML_SCALAR_EVENT:
			on_scalar(&b, &ev);
			break;
		case YAML_ALIAS_EVENT:
			on_alias(&b, &ev);
			break;
		case YAML_SEQUENCE_START_EVENT:
			on_start(&b, &ev, MC_YSEQ, (const char *)ev.data.sequence_start.anchor,
				 (const char *)ev.data.sequence_start.tag);
			break;
		case YAML_MAPPING_START_EVENT:
			on_start(&b, &ev, MC_YMAP, (const char *)ev.data.mapping_start.anchor,
				 (const char *)ev.data.mapping_start.tag);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			on_end(&b);
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	free(b.stack);
	if (b.failed || el->n != n0)
		return b.failed ? b.failed : MC_EINVAL;
	*root = b.root;
	return 0;
}
