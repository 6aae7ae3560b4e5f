/* SPDX-License-Identifier: MIT */
/*
 * ydoc.h - a YAML document as a tree of nodes, built from libyaml's event
 * parser, with the place of every node. Not installed.
 *
 * Each node knows its kind, its text (scalars), whether it was plain
 * (unquoted and untagged: only plain scalars read as numbers, booleans or
 * null) and its 1-based line:col. Aliases share the anchored node; the
 * expanded size of the tree is counted as it is built and a document that
 * would expand past MC_YAML_MAX_NODES is refused without being expanded (the
 * "billion laughs"), and one nested more than MC_YAML_MAX_DEPTH levels is
 * refused at the event that goes too deep. Every node lives in the
 * document's arena and is freed with it at once.
 *
 * Errors go to a struct mc_errlist, which gathers up to MC_ERRLIST_MAX
 * messages ("FILE:LINE:COL: ...") newline-separated in one struct mc_err, so
 * that validation can report all it finds.
 */
#ifndef MCOMP_YAML_H
#define MCOMP_YAML_H

#include <stdint.h>

#include <mcomp/common.h>

#define MC_YAML_MAX_NODES 100000
/* Lists and mappings open at once; deeper documents are refused as parsed. */
#define MC_YAML_MAX_DEPTH 64
#define MC_ERRLIST_MAX 20

enum mc_ykind { MC_YSCALAR, MC_YSEQ, MC_YMAP };

struct mc_ynode {
	enum mc_ykind kind;
	const char *file; /* what the node came from: the file, or "--set KEY" */
	int line, col;	  /* 1-based; line 0 when unknown (an override's value) */
	char *value;	  /* scalar text, "" for an empty scalar; NULL for collections */
	char *tag;	  /* explicit tag, or NULL */
	int plain;	  /* a plain scalar without tag */
	int n;		  /* items of a sequence, pairs of a mapping */
	int cap;
	struct mc_ynode **items; /* sequence items, or mapping values */
	struct mc_ynode **keys;	 /* mapping keys (scalars); NULL for sequences */
	uint64_t size;		 /* nodes of the expanded subtree, itself included */
	int done;		 /* complete: an alias may refer to it */
	int copied;		 /* made by an override (a copy or new): no alias refers to it */
};

struct mc_errlist {
	struct mc_err *err; /* may be NULL */
	int n;		    /* errors reported (including those past the cap) */
};

/* Adds "FILE:LINE:COL: message" (or "FILE: message" for line 0) to el. */
void mc_errlist_add(struct mc_errlist *el, const char *file, int line, int col, const char *fmt,
		    ...) __attribute__((format(printf, 5, 6)));
/* The same at node y's place. */
void mc_errlist_at(struct mc_errlist *el, const struct mc_ynode *y, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

struct mc_ydoc;

/* An empty document (an arena). NULL when out of memory. */
struct mc_ydoc *mc_ydoc_new(void);
void mc_ydoc_free(struct mc_ydoc *d);
/* Arena allocation (zeroed) and string copy; freed with the document. NULL on ENOMEM. */
void *mc_ydoc_alloc(struct mc_ydoc *d, size_t size);
char *mc_ydoc_strdup(struct mc_ydoc *d, const char *s);

/*
 * Parses buf[0..len) as one YAML document into d, its nodes marked with file
 * (copied into the arena). With lines == 0 the nodes get line 0 (an override
 * value). *root is NULL for an empty document. Returns 0, or MC_EINVAL (or
 * MC_ENOMEM) with the errors added to el: syntax errors at libyaml's
 * problem mark, duplicate keys (with both places), undefined or recursive
 * aliases, documents that expand past MC_YAML_MAX_NODES or nest deeper than
 * MC_YAML_MAX_DEPTH, more than one document.
 */
int mc_yaml_parse(struct mc_ydoc *d, const char *buf, size_t len, const char *file, int lines,
		  struct mc_ynode **root, struct mc_errlist *el);

/* New nodes in d's arena (line 0 unless set by the caller). NULL on ENOMEM. */
struct mc_ynode *mc_ynode_new(struct mc_ydoc *d, enum mc_ykind kind, const char *file);
/* Appends an item to a sequence, or a key and value to a mapping. 0 or MC_ENOMEM. */
int mc_ynode_append(struct mc_ydoc *d, struct mc_ynode *c, struct mc_ynode *key,
		    struct mc_ynode *val);
/* A shallow copy of y (its own item arrays, shared children). NULL on ENOMEM. */
struct mc_ynode *mc_ynode_clone(struct mc_ydoc *d, const struct mc_ynode *y);

/* The value of key in mapping m (and its key node in *key when not NULL), or NULL. */
struct mc_ynode *mc_ymap_get(const struct mc_ynode *m, const char *key, struct mc_ynode **keyp);
/* Nonzero for a null scalar: plain "", "~", "null", "Null", "NULL". */
int mc_ynode_is_null(const struct mc_ynode *y);
/* "a mapping", "a sequence", "a string", "null": what the user wrote, for messages. */
const char *mc_ynode_what(const struct mc_ynode *y);

#endif
