/* SPDX-License-Identifier: MIT */
/*
 * loader.c - finding passes: the search path, dlopen, and the checks a pass
 * must pass before the host will use it (like insmod's version magic).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mcomp/pipeline.h>

#include "host/host_int.h"

struct entry {
	const struct mc_pass *pass;
	char *path;
	void *handle;
	int shipped; /* found in a folder mcomp ships passes in */
};

/* A pass of the pass path that hides a shipped one of the same name. */
struct shadow {
	char *name;
	char *path;	/* the file used */
	char *shipped;	/* the file hidden */
};

struct mc_registry {
	int n, cap;
	struct entry *e;
	int nrefused;
	char **refused;
	int nshadows;
	struct shadow *shadows;
};

/* Whether this process is the uninstalled mcomp of a build tree. */
static int running_uninstalled(void)
{
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (len <= 0)
		return 0;
	exe[len] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	return strcmp(exe, MC_BUILD_EXEDIR) == 0;
}

MC_API const char *mc_pass_path(void)
{
	static char path[8192];
	const char *env = getenv("MCOMP_PASS_PATH");

	path[0] = '\0';
	if (env && *env)
		snprintf(path, sizeof(path), "%s:", env);
	if (running_uninstalled())
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s:", MC_BUILD_PASSDIR);
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s", MC_PASSDIR);
	return path;
}

/* Checks the descriptor's table: the host trusts it from here on. */
static int check_params(const struct mc_pass *pass, const char *path, struct mc_err *err)
{
	const struct mc_param_def *d, *e;
	void *conf;
	int ret;

	for (d = pass->params; d && d->name; d++) {
		if (d->type < 0 || d->type >= MC_PARAM_TYPE_COUNT ||
		    d->offset >= pass->conf_size)
			return mc_err_set(err, MC_EPLUGIN,
					  "%s: pass '%s': parameter '%s' has a bad type or offset; "
					  "declare it with the MC_PARAM_* macros of <mcomp/param.h>",
					  path, pass->name, d->name);
		if ((d->type == MC_PARAM_TENUM ||
		     (d->type == MC_PARAM_TMAP && d->elem == MC_PARAM_TENUM)) && !d->choices)
			return mc_err_set(err, MC_EPLUGIN,
					  "%s: pass '%s': enum parameter '%s' has no choices", path,
					  pass->name, d->name);
		if (d->type == MC_PARAM_TMAP && d->elem != MC_PARAM_TINT &&
		    d->elem != MC_PARAM_TFLOAT && d->elem != MC_PARAM_TBOOL &&
		    d->elem != MC_PARAM_TSTRING && d->elem != MC_PARAM_TENUM)
			return mc_err_set(err, MC_EPLUGIN,
					  "%s: pass '%s': map parameter '%s' has values of type %s; "
					  "a map holds ints, floats, bools, strings or enum choices",
					  path, pass->name, d->name, mc_param_type_name(d->elem));
		if ((d->flags & MC_PARAM_FOPTIONAL) && d->def)
			return mc_err_set(err, MC_EPLUGIN,
					  "%s: pass '%s': parameter '%s' is optional and has a default; "
					  "drop MC_PARAM_FOPTIONAL or the default",
					  path, pass->name, d->name);
		for (e = pass->params; e != d; e++)
			if (strcmp(e->name, d->name) == 0)
				return mc_err_set(err, MC_EPLUGIN,
						  "%s: pass '%s' declares parameter '%s' twice", path,
						  pass->name, d->name);
	}
	if (!pass->params)
		return 0;
	conf = calloc(1, pass->conf_size ? pass->conf_size : 1);
	if (!conf)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
	ret = mc_param_defaults(pass->params, conf, err);
	mc_param_free(pass->params, conf);
	free(conf);
	if (ret)
		return mc_err_prefix(err, "%s: pass '%s': a default does not parse", path,
				     pass->name);
	return 0;
}

MC_API const struct mc_pass *mc_pass_open(const char *path, void **handle, struct mc_err *err)
{
	const struct mc_pass *(*entry)(void);
	const struct mc_pass *pass;
	void *h;

	*handle = NULL;
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		mc_err_set(err, MC_EPLUGIN,
			   "%s: not a loadable shared object (%s); remove it from the pass path "
			   "or rebuild it",
			   path, dlerror());
		return NULL;
	}
	*(void **)&entry = dlsym(h, MC_PASS_ENTRY);
	if (!entry) {
		mc_err_set(err, MC_EPLUGIN,
			   "%s: no %s() in this shared object, so it is not an mcomp pass; "
			   "define one with MC_PASS_DEFINE from <mcomp/pass.h>",
			   path, MC_PASS_ENTRY);
		goto fail;
	}
	pass = entry();
	if (!pass) {
		mc_err_set(err, MC_EPLUGIN, "%s: %s() returned NULL", path, MC_PASS_ENTRY);
		goto fail;
	}
	/* Only the first field may be read before this comparison. */
	if (pass->abi != MC_PASS_ABI) {
		mc_err_set(err, MC_EPLUGIN,
			   "%s: pass ABI %d should be %d; rebuild the pass against this mcomp's "
			   "headers (pkg-config --variable=abi mcomp prints %d)",
			   path, pass->abi, MC_PASS_ABI, MC_PASS_ABI);
		goto fail;
	}
	if (!pass->name || !*pass->name || !pass->run || !pass->version) {
		mc_err_set(err, MC_EPLUGIN,
			   "%s: the pass descriptor lacks a name, a version or a run operation", path);
		goto fail;
	}
	if (check_params(pass, path, err))
		goto fail;
	for (int i = 0; pass->ops && pass->ops[i]; i++) {
		/* Models will point at these ops: the pass stays loaded for good. */
		if (!dlopen(path, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
			mc_err_set(err, MC_EPLUGIN, "%s: cannot keep the pass loaded (%s)", path,
				   dlerror());
			goto fail;
		}
		if (mc_op_register(pass->ops[i], pass->name, err)) {
			mc_err_prefix(err, "%s", path);
			goto fail;
		}
	}
	*handle = h;
	return pass;
fail:
	dlclose(h);
	return NULL;
}

static int refuse(struct mc_registry *r, const char *msg)
{
	char **n = realloc(r->refused, (r->nrefused + 1) * sizeof(*n));

	if (!n)
		return MC_ENOMEM;
	r->refused = n;
	r->refused[r->nrefused] = strdup(msg);
	if (!r->refused[r->nrefused])
		return MC_ENOMEM;
	r->nrefused++;
	return 0;
}

static int add_shadow(struct mc_registry *r, const char *name, const char *path,
		      const char *shipped)
{
	struct shadow *s = realloc(r->shadows, (r->nshadows + 1) * sizeof(*s));

	if (!s)
		return MC_ENOMEM;
	r->shadows = s;
	s = &r->shadows[r->nshadows];
	s->name = strdup(name);
	s->path = strdup(path);
	s->shipped = strdup(shipped);
	if (!s->name || !s->path || !s->shipped) {
		free(s->name);
		free(s->path);
		free(s->shipped);
		return MC_ENOMEM;
	}
	r->nshadows++;
	return 0;
}

/* shipped: path is in the installed (or the build tree's) pass folder. */
static int add_file(struct mc_registry *r, const char *path, int shipped)
{
	struct mc_err err = { 0 };
	const struct mc_pass *pass;
	const char *other;
	void *h;
	int i;

	for (i = 0; i < r->n; i++)
		if (strcmp(r->e[i].path, path) == 0)
			return 0; /* the same file reached through two path entries */
	pass = mc_pass_open(path, &h, &err);
	if (!pass)
		return refuse(r, err.msg);
	if (mc_registry_find(r, pass->name, &other)) {
		/* A user's pass of a shipped one's name is used; say so at every use. */
		for (i = 0; i < r->n && strcmp(r->e[i].pass->name, pass->name); i++)
			;
		if (shipped && !r->e[i].shipped && add_shadow(r, pass->name, other, path)) {
			dlclose(h);
			return MC_ENOMEM;
		}
		mc_err_set(&err, MC_EPLUGIN,
			   "%s: pass '%s' is already provided by %s, found first on the pass "
			   "path; remove one of them or give this one another name",
			   path, pass->name, other);
		dlclose(h);
		return refuse(r, err.msg);
	}
	if (r->n == r->cap) {
		int cap = r->cap ? 2 * r->cap : 16;
		struct entry *e = realloc(r->e, cap * sizeof(*e));

		if (!e) {
			dlclose(h);
			return MC_ENOMEM;
		}
		r->e = e;
		r->cap = cap;
	}
	r->e[r->n].pass = pass;
	r->e[r->n].handle = h;
	r->e[r->n].shipped = shipped;
	r->e[r->n].path = strdup(path);
	if (!r->e[r->n].path) {
		dlclose(h);
		return MC_ENOMEM;
	}
	r->n++;
	return 0;
}

static int is_so(const struct dirent *d)
{
	size_t len = strlen(d->d_name);

	return d->d_name[0] != '.' && len > 3 && strcmp(d->d_name + len - 3, ".so") == 0;
}

/* Whether folder real (a resolved path) is one mcomp ships passes in. */
static int is_shipped_dir(const char *real)
{
	const char *const dirs[] = { MC_PASSDIR, MC_BUILD_PASSDIR };
	char other[PATH_MAX];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (realpath(dirs[i], other) && strcmp(other, real) == 0)
			return 1;
	return 0;
}

static int scan_dir(struct mc_registry *r, const char *dir)
{
	char real[PATH_MAX], file[PATH_MAX * 2];
	struct dirent **list;
	int n, i, ret = 0, shipped;

	if (!realpath(dir, real))
		return 0; /* a missing directory on the path is not an error */
	shipped = is_shipped_dir(real);
	n = scandir(real, &list, is_so, alphasort);
	if (n < 0)
		return 0;
	for (i = 0; i < n; i++) {
		snprintf(file, sizeof(file), "%s/%s", real, list[i]->d_name);
		if (!ret)
			ret = add_file(r, file, shipped);
		free(list[i]);
	}
	free(list);
	return ret;
}

MC_API struct mc_registry *mc_registry_open(struct mc_err *err)
{
	struct mc_registry *r = calloc(1, sizeof(*r));
	char *path, *dir, *save = NULL;

	if (!r)
		goto nomem;
	path = strdup(mc_pass_path());
	if (!path)
		goto nomem;
	for (dir = strtok_r(path, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		if (scan_dir(r, dir)) {
			free(path);
			goto nomem;
		}
	}
	free(path);
	return r;
nomem:
	mc_registry_free(r);
	mc_err_set(err, MC_ENOMEM, "out of memory while loading passes");
	return NULL;
}

MC_API void mc_registry_free(struct mc_registry *r)
{
	int i;

	if (!r)
		return;
	for (i = 0; i < r->n; i++) {
		dlclose(r->e[i].handle);
		free(r->e[i].path);
	}
	for (i = 0; i < r->nrefused; i++)
		free(r->refused[i]);
	for (i = 0; i < r->nshadows; i++) {
		free(r->shadows[i].name);
		free(r->shadows[i].path);
		free(r->shadows[i].shipped);
	}
	free(r->e);
	free(r->refused);
	free(r->shadows);
	free(r);
}

MC_API int mc_registry_count(const struct mc_registry *r)
{
	return r->n;
}

MC_API const struct mc_pass *mc_registry_get(const struct mc_registry *r, int i,
					     const char **path)
{
	if (i < 0 || i >= r->n)
		return NULL;
	if (path)
		*path = r->e[i].path;
	return r->e[i].pass;
}

MC_API const struct mc_pass *mc_registry_find(const struct mc_registry *r, const char *name,
					      const char **path)
{
	int i;

	for (i = 0; i < r->n; i++)
		if (strcmp(r->e[i].pass->name, name) == 0)
			return mc_registry_get(r, i, path);
	return NULL;
}

MC_API int mc_registry_nrefused(const struct mc_registry *r)
{
	return r->nrefused;
}

MC_API const char *mc_registry_refused(const struct mc_registry *r, int i)
{
	return i >= 0 && i < r->nrefused ? r->refused[i] : NULL;
}

MC_API int mc_registry_nshadows(const struct mc_registry *r)
{
	return r->nshadows;
}

MC_API const char *mc_registry_shadow(const struct mc_registry *r, int i, const char **path,
				      const char **shipped)
{
	if (i < 0 || i >= r->nshadows)
		return NULL;
	if (path)
		*path = r->shadows[i].path;
	if (shipped)
		*shipped = r->shadows[i].shipped;
	return r->shadows[i].name;
}
