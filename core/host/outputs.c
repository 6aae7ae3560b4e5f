/* SPDX-License-Identifier: MIT */
/*
 * outputs.c - one rule for every file a pipeline writes (docs/security.md):
 * the output model, the report, and each pass parameter marked
 * MC_PARAM_FOUTPUT. At validation, before anything runs, each must
 *
 *  - be a regular file or not exist: a symbolic link, a device, a FIFO, a
 *    socket or a folder is refused, saying which (never followed);
 *  - not be a file the pipeline reads: the pipeline itself, the data files,
 *    the models loaded, the passes' shared objects, a pass's input paths;
 *  - not be another output.
 *
 * Files are compared as the kernel names them, never by spelling: an
 * existing file by device and inode (so a hard link is the same file), a
 * file not there yet by the device and inode of its deepest existing folder
 * (symbolic links in the folders resolved) and the rest of the path,
 * normalized. The host writes each output through a temporary file that is
 * checked again at the rename (core/base/fileio.c).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base_int.h"
#include "host/pipeline_int.h"

/* Where a file is: the file itself (exists), or a folder and the path below it. */
struct file_id {
	int exists;
	dev_t dev;
	ino_t ino;
	char rest[PATH_MAX]; /* "" when exists; else "a/b/name" below the folder */
};

/* Appends component c to rest ("a/b" + "c"). 0, or -1 when too long. */
static int rest_push(char *rest, const char *c, size_t clen)
{
	size_t n = strlen(rest);

	if (n + clen + 2 > PATH_MAX)
		return -1;
	if (n)
		rest[n++] = '/';
	memcpy(rest + n, c, clen);
	rest[n + clen] = '\0';
	return 0;
}

/*
 * The identity of path, as the kernel would resolve it when the file is
 * created (folders made as needed): its components walked from / or the
 * current folder, "." dropped, ".." taken from the resolved folder, links
 * among the folders followed; the last component never followed. 0, or -1
 * when the path cannot be resolved (too long, an unreadable folder).
 */
static int file_id_of(const char *path, struct file_id *id)
{
	char cur[PATH_MAX], next[PATH_MAX + NAME_MAX + 2], *res;
	const char *s = path, *e;
	int real = 1; /* cur exists and rest is empty so far */
	struct stat st;

	memset(id, 0, sizeof(*id));
	if (!realpath(path[0] == '/' ? "/" : ".", cur))
		return -1;
	while (*s) {
		size_t n;
		int last;

		while (*s == '/')
			s++;
		if (!*s)
			break;
		e = strchr(s, '/');
		n = e ? (size_t)(e - s) : strlen(s);
		last = !s[n] || !s[n + strspn(s + n, "/")];
		if (n == 1 && s[0] == '.') {
			s += n;
			continue;
		}
		if (n == 2 && s[0] == '.' && s[1] == '.') {
			char *slash;

			if (id->rest[0]) {
				slash = strrchr(id->rest, '/');
				if (slash)
					*slash = '\0';
				else
					id->rest[0] = '\0';
				real = !id->rest[0];
			} else if ((slash = strrchr(cur, '/')) && slash != cur) {
				*slash = '\0';
			} else {
				strcpy(cur, "/");
			}
			s += n;
			continue;
		}
		if (!real || last) {
			if (rest_push(id->rest, s, n))
				return -1;
			real = 0;
			s += n;
			continue;
		}
		if (snprintf(next, sizeof(next), "%s/%.*s", strcmp(cur, "/") ? cur : "", (int)n,
			     s) >= (int)sizeof(next))
			return -1;
		if (lstat(next, &st))
			st.st_mode = 0; /* not there */
		res = NULL;
		if (S_ISLNK(st.st_mode)) {
			/* A link to a folder: followed, as the kernel follows it. */
			res = realpath(next, NULL);
			if (res && strlen(res) < sizeof(cur) && !stat(res, &st))
				strcpy(next, res);
			else
				st.st_mode = 0;
			free(res);
		}
		if (S_ISDIR(st.st_mode)) {
			strcpy(cur, next);
		} else {
			/* Not there (or not a folder): the rest is below cur. */
			if (rest_push(id->rest, s, n))
				return -1;
			real = 0;
		}
		s += n;
	}
	if (!id->rest[0]) {
		/* The path is a folder itself ("/", "a/.."): name it as such. */
		if (stat(cur, &st))
			return -1;
		id->exists = 1;
		id->dev = st.st_dev;
		id->ino = st.st_ino;
		return 0;
	}
	if (real || !strchr(id->rest, '/')) {
		/* The folder exists: the file is there or not. */
		snprintf(next, sizeof(next), "%s/%s", strcmp(cur, "/") ? cur : "", id->rest);
		if (lstat(next, &st) == 0) {
			id->exists = 1;
			id->dev = st.st_dev;
			id->ino = st.st_ino;
			id->rest[0] = '\0';
			return 0;
		}
	}
	if (stat(cur, &st))
		return -1;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return 0;
}

static int same_id(const struct file_id *a, const struct file_id *b)
{
	return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
	       !strcmp(a->rest, b->rest);
}

/* ---------------------------------------------------------------- collecting */

/* An input: its path and what it is, for the message. */
struct in_file {
	const char *path;
	char what[200];
};

static int add_output(struct mc_pipeline *p, char *path, const char *what, const struct mc_loc *loc,
		      int pass, const struct mc_param_def *def)
{
	struct mc_pl_output *o = &p->outputs[p->n_outputs++];

	o->path = path;
	snprintf(o->what, sizeof(o->what), "%s", what);
	o->loc = *loc;
	o->pass = pass;
	o->def = def;
	return 0;
}

static const struct mc_loc *pass_key_loc(const struct mc_pl_pass *pp, const struct mc_param_def *d)
{
	for (int i = 0; i < pp->n_keys; i++)
		if (pp->keys[i].def == d)
			return &pp->keys[i].loc;
	return &pp->loc;
}

static char **path_field(const struct mc_pl_pass *pp, const struct mc_param_def *d)
{
	return (char **)((char *)pp->conf + d->offset);
}

#define bad_at(l, loc, ...)                                                                        \
	mc_errlist_add(&(l)->el, (loc)->file, (loc)->line, (loc)->col, __VA_ARGS__)

/*
 * *path with tag put into its file name (mc_pipeline_load_tagged): before
 * the first '.' of the name that is not its first character, so that every
 * extension (.safetensors.zst) stays: out/mlp.safetensors becomes
 * out/mlp.TAG.safetensors, out/log becomes out/log.TAG. 0, or -1 when out of
 * memory (*path unchanged).
 */
static int retag(char **path, const char *tag)
{
	const char *name, *dot;
	size_t at, n;
	char *t;

	if (!tag || !*path)
		return 0;
	name = strrchr(*path, '/');
	name = name ? name + 1 : *path;
	dot = *name ? strchr(name + 1, '.') : NULL;
	at = dot ? (size_t)(dot - *path) : strlen(*path);
	n = strlen(*path) + strlen(tag) + 2;
	t = malloc(n);
	if (!t)
		return -1;
	snprintf(t, n, "%.*s.%s%s", (int)at, *path, tag, *path + at);
	free(*path);
	*path = t;
	return 0;
}

/* The outputs, in the order of the file: the passes', the model, the report. */
static int collect_outputs(struct ld *l)
{
	struct mc_pipeline *p = l->p;
	int n = 2;

	for (int i = 0; i < p->n_passes; i++)
		for (const struct mc_param_def *d = p->passes[i].pass->params; d && d->name; d++)
			n += !!(d->flags & MC_PARAM_FOUTPUT);
	p->outputs = calloc((size_t)n, sizeof(*p->outputs));
	if (!p->outputs)
		return -1;
	for (int i = 0; i < p->n_passes; i++) {
		struct mc_pl_pass *pp = &p->passes[i];
		char what[160];

		if (!pp->conf)
			continue;
		for (const struct mc_param_def *d = pp->pass->params; d && d->name; d++) {
			if (!(d->flags & MC_PARAM_FOUTPUT))
				continue;
			if (d->type != MC_PARAM_TPATH) {
				bad_at(l, &pp->loc,
				       "pass '%s' (%s) marks parameter '%s' as a file "
				       "it writes, but it is not a path; fix the pass",
				       pp->pass->name, pp->so_path, d->name);
				continue;
			}
			if (!*path_field(pp, d))
				continue; /* not written: a plot nobody asked for */
			if (retag(path_field(pp, d), p->out_tag))
				return -1;
			snprintf(what, sizeof(what), "pass '%s', %s", pp->pass->name, d->name);
			add_output(p, *path_field(pp, d), what, pass_key_loc(pp, d), i, d);
		}
	}
	if (retag(&p->output_path, p->out_tag) || retag(&p->report_path, p->out_tag))
		return -1;
	if (p->output_path)
		add_output(p, p->output_path, "output path", &p->output_loc, -1, NULL);
	if (p->report_path)
		add_output(p, p->report_path, "report", &p->report_loc, -1, NULL);
	return 0;
}

/* Every file the pipeline reads; NULL paths (a split in error) left out. */
static struct in_file *collect_inputs(const struct mc_pipeline *p, int *n)
{
	struct in_file *in;
	int cap = 1 + 2 * p->n_splits + p->n_models + p->n_passes, k = 0;

	for (int i = 0; i < p->n_passes; i++)
		for (const struct mc_param_def *d = p->passes[i].pass->params; d && d->name; d++)
			cap++;
	in = calloc((size_t)cap, sizeof(*in));
	if (!in)
		return NULL;
	in[k].path = p->path;
	snprintf(in[k++].what, sizeof(in->what), "the pipeline file itself");
	for (int i = 0; i < p->n_splits; i++) {
		const struct mc_pl_split *s = &p->splits[i];

		if (s->images) {
			in[k].path = s->images;
			snprintf(in[k++].what, sizeof(in->what), "a file of data split '%s'",
				 s->name);
		}
		if (s->labels) {
			in[k].path = s->labels;
			snprintf(in[k++].what, sizeof(in->what), "a file of data split '%s'",
				 s->name);
		}
	}
	for (int i = 0; i < p->n_models; i++) {
		if (!p->models[i].load)
			continue;
		in[k].path = p->models[i].load;
		snprintf(in[k++].what, sizeof(in->what), "the file model '%s' is loaded from",
			 p->models[i].name);
	}
	for (int i = 0; i < p->n_passes; i++) {
		const struct mc_pl_pass *pp = &p->passes[i];

		if (pp->so_path) {
			in[k].path = pp->so_path;
			snprintf(in[k++].what, sizeof(in->what), "the shared object of pass '%s'",
				 pp->pass->name);
		}
		for (const struct mc_param_def *d = pp->pass->params; pp->conf && d && d->name;
		     d++) {
			if (d->type != MC_PARAM_TPATH || (d->flags & MC_PARAM_FOUTPUT) ||
			    !*path_field(pp, d))
				continue;
			in[k].path = *path_field(pp, d);
			snprintf(in[k++].what, sizeof(in->what), "pass '%s', %s, which it reads",
				 pp->pass->name, d->name);
		}
	}
	*n = k;
	return in;
}

/* ---------------------------------------------------------------- checking */

/* Refuses an output that is there and is not a regular file; 0 when fine. */
static int check_kind(struct ld *l, const struct mc_pl_output *o, struct stat *st)
{
	char target[PATH_MAX];
	ssize_t n;
	int ret = mc_output_target_ok(o->path, st, &l->tmp);

	if (ret >= 0)
		return ret;
	if (lstat(o->path, st)) {
		bad_at(l, &o->loc, "%s '%s': %s", o->what, o->path, l->tmp.msg);
		return -1;
	}
	if (S_ISDIR(st->st_mode)) {
		bad_at(l, &o->loc, "%s '%s' is a folder; name the file to write", o->what, o->path);
	} else if (S_ISLNK(st->st_mode)) {
		n = readlink(o->path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		bad_at(l, &o->loc,
		       "%s '%s' is a symbolic link (to '%s'); mcomp never writes "
		       "through a link: name the file itself or a new path",
		       o->what, o->path, target);
	} else {
		bad_at(l, &o->loc,
		       "%s '%s' is %s; mcomp writes only regular files and never "
		       "replaces anything else: name a new file or a regular one",
		       o->what, o->path, mc_file_kind(st->st_mode));
	}
	return -1;
}

/* Whether path (after its last '/') names a folder: "", "." or "..". */
static int names_folder(const char *path)
{
	const char *s = strrchr(path, '/');

	s = s ? s + 1 : path;
	return !*s || !strcmp(s, ".") || !strcmp(s, "..");
}

void mc_pl_check_outputs(struct ld *l)
{
	struct mc_pipeline *p = l->p;
	struct file_id *ids = NULL;
	struct in_file *in = NULL;
	int n_in = 0;

	if (collect_outputs(l) || !(in = collect_inputs(p, &n_in)) ||
	    !(ids = calloc((size_t)p->n_outputs + 1, sizeof(*ids))) ||
	    !(p->inputs = calloc((size_t)n_in + 1, sizeof(*p->inputs)))) {
		mc_errlist_add(&l->el, p->path, 0, 0, "out of memory");
		goto out;
	}
	/* The inputs as they are read: links followed. */
	for (int j = 0; j < n_in; j++) {
		struct stat st;

		if (stat(in[j].path, &st) == 0) {
			p->inputs[p->n_inputs].dev = st.st_dev;
			p->inputs[p->n_inputs++].ino = st.st_ino;
		}
	}
	for (int i = 0; i < p->n_outputs; i++) {
		struct mc_pl_output *o = &p->outputs[i];
		struct stat st;
		int hit = -1, ret;

		if (names_folder(o->path)) {
			bad_at(l, &o->loc, "%s '%s' names a folder; name the file to write",
			       o->what, o->path);
			ids[i].exists = -1;
			continue;
		}
		ret = check_kind(l, o, &st);
		if (ret < 0 || file_id_of(o->path, &ids[i])) {
			ids[i].exists = -1; /* reported, or unresolvable: compared with nothing */
			continue;
		}
		for (int j = 0; ret == 1 && hit < 0 && j < n_in; j++) {
			struct stat is;

			if (stat(in[j].path, &is) == 0 && is.st_dev == st.st_dev &&
			    is.st_ino == st.st_ino)
				hit = j;
		}
		if (hit >= 0) {
			bad_at(l, &o->loc,
			       "%s '%s' would overwrite an input (%s, '%s'); choose "
			       "another path",
			       o->what, o->path, in[hit].what, in[hit].path);
			continue;
		}
		for (int j = 0; j < i; j++) {
			const struct mc_pl_output *q = &p->outputs[j];

			if (ids[j].exists < 0 || !same_id(&ids[i], &ids[j]))
				continue;
			if (q->loc.line > 0)
				bad_at(l, &o->loc,
				       "%s '%s' is the same file as %s '%s' (%s:%d:%d); "
				       "give each output its own path",
				       o->what, o->path, q->what, q->path, q->loc.file, q->loc.line,
				       q->loc.col);
			else
				bad_at(l, &o->loc,
				       "%s '%s' is the same file as %s '%s' (%s); "
				       "give each output its own path",
				       o->what, o->path, q->what, q->path, q->loc.file);
			break;
		}
	}
out:
	free(ids);
	free(in);
}

struct mc_pl_output *mc_pl_output_find(struct mc_pipeline *p, int pass,
				       const struct mc_param_def *def, const char *path)
{
	for (int i = 0; i < p->n_outputs; i++) {
		struct mc_pl_output *o = &p->outputs[i];

		if (pass >= 0 ? o->pass == pass && o->def == def
			      : o->pass < 0 && path && !strcmp(o->path, path))
			return o;
	}
	return NULL;
}

int mc_pl_output_recheck(const struct mc_pipeline *p, const char *path, struct mc_err *err)
{
	struct stat st;

	if (lstat(path, &st))
		return 0;
	for (int j = 0; j < p->n_inputs; j++)
		if (p->inputs[j].dev == st.st_dev && p->inputs[j].ino == st.st_ino)
			return mc_err_set(err, MC_EINVAL,
					  "%s: became one of the pipeline's inputs since it was "
					  "validated; not overwritten",
					  path);
	return 0;
}
