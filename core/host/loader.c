/* SPDX-License-Identifier: MIT */
/*
 * loader.c - finding passes: the search path, dlopen, and the checks a pass
 * must pass before the host will use it (like insmod's version magic).
 *
 * A pass is code the user installs, like a kernel module, and it runs with
 * the user's rights as soon as it is loaded (its constructors run inside
 * dlopen). So the checks come in two rounds (docs/security.md, "Pass
 * plugins"):
 *
 * - before any of its code runs: the file is a regular file (opened
 *   O_NONBLOCK, so a FIFO or a device named x.so cannot hang us), neither it
 *   nor a folder above it can be changed by users other than its owner, root
 *   or this user (unless MCOMP_PASS_INSECURE=1), and it is an ELF shared
 *   object for this machine whose dynamic symbols define mc_pass_descriptor.
 *   The very file checked is the file loaded: dlopen is given
 *   /proc/self/fd/N of the descriptor those checks read.
 * - after dlopen, before the host uses it: the descriptor and its tables are
 *   read only where the loaded objects' segments say memory is readable, so
 *   a table without its end marker or a wild pointer is a message, not a
 *   fault; names, texts, sizes, offsets and alignments are checked.
 *
 * The descriptor itself is not read from the file without loading it: it is
 * returned by a function, and its pointers are filled by the dynamic
 * linker's relocations, so reading it from the file would mean redoing the
 * dynamic linker's work. What the file's own bytes can tell (above) is
 * checked before dlopen.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/pipeline.h>

#include "base/param_int.h"
#include "host/host_int.h"

/* Limits on what a descriptor declares beyond its parameter table. */
#define MAX_OPS 64
#define MAX_CONF (1u << 20)	  /* bytes of a config struct */
#define MAX_ELF_TABLE (64u << 20) /* bytes of a symbol or string table read */

struct entry {
	const struct mc_pass *pass;
	char *path;
	void *handle;
	dev_t dev;
	ino_t ino;
	int shipped; /* found in a folder mcomp ships passes in */
};

/* A pass of the pass path that hides a shipped one of the same name. */
struct shadow {
	char *name;
	char *path;	/* the file found first */
	char *shipped;	/* the file hidden */
};

/* An open-addressing index of entries (index + 1; 0: empty slot). */
struct index {
	unsigned cap;
	int *slot;
};

struct mc_registry {
	int n, cap;
	struct entry *e;	/* passes found on the path, by name */
	struct index by_name;
	struct seen {
		unsigned cap, n;
		struct file_id {
			dev_t dev;
			ino_t ino;
		} *id;
		unsigned char *used; /* whether slot k holds id[k] */
	} seen;			/* files of the path already judged */
	int nextra, capextra;
	struct entry *extra;	/* passes a pipeline named by file */
	int nrefused;
	char **refused;
	int nshadows;
	struct shadow *shadows;
};

/* ---------------------------------------------------------------- search path */

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

/* The search path, malloc'd (any length), or NULL when out of memory. */
static char *search_path(void)
{
	const char *env = getenv("MCOMP_PASS_PATH");
	const char *build = running_uninstalled() ? MC_BUILD_PASSDIR : NULL;
	size_t n = strlen(MC_PASSDIR) + 1;
	char *path;

	if (env && *env)
		n += strlen(env) + 1;
	if (build)
		n += strlen(build) + 1;
	path = malloc(n);
	if (!path)
		return NULL;
	snprintf(path, n, "%s%s%s%s%s", env && *env ? env : "", env && *env ? ":" : "",
		 build ? build : "", build ? ":" : "", MC_PASSDIR);
	return path;
}

MC_API const char *mc_pass_path(void)
{
	static char *path;
	char *now = search_path();

	if (!now)
		return path ? path : MC_PASSDIR;
	free(path);
	path = now;
	return path;
}

/* ---------------------------------------------------------------- messages */

/* s as a message may show it: control bytes and bytes that are not UTF-8
 * as \xNN, at most max bytes of s. Returns buf (of n >= 8 bytes). */
static const char *shown(const char *s, size_t max, char *buf, size_t n)
{
	size_t o = 0, i = 0;

	while (s[i] && i < max && o + 8 < n) {
		unsigned char c = (unsigned char)s[i];
		size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

		/* mc_text_printable stops at the first bad byte, so at a NUL too */
		if (len <= n - o - 8 && mc_text_printable(s + i, len)) {
			memcpy(buf + o, s + i, len);
			o += len;
			i += len;
		} else {
			o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
			i++;
		}
	}
	if (s[i])
		o += (size_t)snprintf(buf + o, n - o, "...");
	buf[o] = '\0';
	return buf;
}

/* ---------------------------------------------------------------- who may write */

/*
 * Why st lets users other than its owner, root and this user change it, or
 * NULL. A sticky folder (/tmp) keeps others from replacing what they do not
 * own, so it is safe above the pass's folder (sticky_ok) but not as that
 * folder, where anyone could add a file. Group-writable is refused only
 * when someone else owns the file: a group-writable file of one's own is
 * the umask-002 default of user-private groups, and root's are the
 * system's arrangement (Debian's /usr/local is root:staff 2775).
 */
static const char *loose_mode(const struct stat *st, int sticky_ok, const char **fix)
{
	if (sticky_ok && S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX))
		return NULL;
	if (st->st_mode & S_IWOTH) {
		*fix = "o-w";
		return "world-writable";
	}
	if ((st->st_mode & S_IWGRP) && st->st_uid != 0 && st->st_uid != geteuid()) {
		*fix = "g-w";
		return "group-writable and owned by another user";
	}
	return NULL;
}

static int insecure_allowed(void)
{
	const char *v = getenv("MCOMP_PASS_INSECURE");

	return v && !strcmp(v, "1");
}

static int refuse_mode(const char *path, const char *what, const char *whose,
		       const struct stat *st, const char *why, const char *fix, struct mc_err *err)
{
	return mc_err_set(err, MC_EPLUGIN,
			  "%s: refused: %s %s is %s (mode %04o), so another user could put code "
			  "in this pass; run 'chmod %s %s' (or set MCOMP_PASS_INSECURE=1 to load "
			  "it anyway)",
			  path, what, whose, why, (unsigned)(st->st_mode & 07777), fix, whose);
}

/*
 * Checks the folder real (a resolved path) and every folder above it.
 * path names the file or folder being judged, for the message.
 */
static int check_folders(const char *path, const char *real, struct mc_err *err)
{
	char *dir = strdup(real), *slash;
	const char *why, *fix;
	struct stat st;
	int leaf = 1, ret = 0;

	if (!dir)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
	for (;;) {
		if (stat(*dir ? dir : "/", &st)) {
			ret = mc_err_set(err, MC_EPLUGIN, "%s: cannot check folder %s (%s)", path,
					 *dir ? dir : "/", strerror(errno));
			break;
		}
		why = loose_mode(&st, !leaf, &fix);
		if (why) {
			ret = refuse_mode(path, leaf ? "its folder" : "the folder above it",
					  *dir ? dir : "/", &st, why, fix, err);
			break;
		}
		if (!*dir)
			break;
		slash = strrchr(dir, '/');
		if (!slash)
			break;
		*slash = '\0';
		leaf = 0;
	}
	free(dir);
	return ret;
}

/* ---------------------------------------------------------------- the file's ELF */

#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HOST_MACHINE EM_PPC64
#elif defined(__s390x__)
#define HOST_MACHINE EM_S390
#else
#define HOST_MACHINE EM_NONE /* not checked here; dlopen checks it */
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_DATA ELFDATA2LSB
#else
#define HOST_DATA ELFDATA2MSB
#endif
#if __ELF_NATIVE_CLASS == 64
#define HOST_CLASS ELFCLASS64
#else
#define HOST_CLASS ELFCLASS32
#endif

/* n bytes at off of the file into a new buffer, or NULL (bounds checked by the caller). */
static void *read_at(int fd, uint64_t off, uint64_t n)
{
	char *buf = malloc(n ? n : 1);
	uint64_t got = 0;

	while (buf && got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));

		if (r <= 0) {
			free(buf);
			return NULL;
		}
		got += (uint64_t)r;
	}
	return buf;
}

/* Whether [off, off + n) lies within a file of size bytes. */
static int within(uint64_t off, uint64_t n, uint64_t size)
{
	return off <= size && n <= size - off;
}

/*
 * Judges the file's bytes before any of its code can run: an ELF shared
 * object for this machine whose dynamic symbol table defines the entry
 * point as a function. A file without section headers (stripped with
 * sstrip) keeps only the header checks; dlsym then finds the entry or not.
 */
static int check_elf(int fd, uint64_t size, const char *path, struct mc_err *err)
{
	ElfW(Ehdr) eh;
	ElfW(Shdr) *sh = NULL, *sym_sh = NULL, *str_sh;
	ElfW(Sym) *syms = NULL;
	char *strs = NULL;
	uint64_t nsyms, i;
	int ret = 0, found = 0;

	if (size < sizeof(eh) || pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG))
		return mc_err_set(err, MC_EPLUGIN,
				  "%s: not a loadable shared object: it does not start with an "
				  "ELF header; remove it from the pass path or rebuild it", path);
	if (eh.e_ident[EI_CLASS] != HOST_CLASS || eh.e_ident[EI_DATA] != HOST_DATA ||
	    (HOST_MACHINE != EM_NONE && eh.e_machine != HOST_MACHINE))
		return mc_err_set(err, MC_EPLUGIN,
				  "%s: not a loadable shared object: ELF class %d, byte order %d, "
				  "machine %d, where this mcomp is class %d, order %d, machine %d; "
				  "rebuild the pass for this machine",
				  path, eh.e_ident[EI_CLASS], eh.e_ident[EI_DATA], eh.e_machine,
				  HOST_CLASS, HOST_DATA, HOST_MACHINE);
	if (eh.e_type != ET_DYN)
		return mc_err_set(err, MC_EPLUGIN,
				  "%s: not a loadable shared object: ELF type %d, not a shared "
				  "object (%d); link the pass with -shared",
				  path, eh.e_type, ET_DYN);
	if (!eh.e_shoff || !eh.e_shnum)
		return 0;
	if (eh.e_shentsize != sizeof(*sh) ||
	    !within(eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(*sh), size))
		return mc_err_set(err, MC_EPLUGIN, "%s: corrupt ELF file: its section headers "
				  "lie outside the file's %llu bytes", path,
				  (unsigned long long)size);
	sh = read_at(fd, eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(*sh));
	if (!sh)
		return mc_err_set(err, MC_EIO, "%s: cannot read the section headers", path);
	for (i = 0; i < eh.e_shnum && !sym_sh; i++)
		if (sh[i].sh_type == SHT_DYNSYM)
			sym_sh = &sh[i];
	if (!sym_sh) {
		ret = mc_err_set(err, MC_EPLUGIN,
				 "%s: no %s() in this shared object (it has no dynamic symbols), "
				 "so it is not an mcomp pass; define one with MC_PASS_DEFINE from "
				 "<mcomp/pass.h>", path, MC_PASS_ENTRY);
		goto out;
	}
	if (sym_sh->sh_link >= eh.e_shnum || sym_sh->sh_entsize != sizeof(*syms) ||
	    sh[sym_sh->sh_link].sh_type != SHT_STRTAB || sym_sh->sh_size > MAX_ELF_TABLE ||
	    !within(sym_sh->sh_offset, sym_sh->sh_size, size)) {
		ret = mc_err_set(err, MC_EPLUGIN, "%s: corrupt ELF file: a bad dynamic symbol "
				 "table", path);
		goto out;
	}
	str_sh = &sh[sym_sh->sh_link];
	if (!str_sh->sh_size || str_sh->sh_size > MAX_ELF_TABLE ||
	    !within(str_sh->sh_offset, str_sh->sh_size, size)) {
		ret = mc_err_set(err, MC_EPLUGIN, "%s: corrupt ELF file: a bad dynamic string "
				 "table", path);
		goto out;
	}
	syms = read_at(fd, sym_sh->sh_offset, sym_sh->sh_size);
	strs = read_at(fd, str_sh->sh_offset, str_sh->sh_size);
	if (!syms || !strs) {
		ret = mc_err_set(err, MC_EIO, "%s: cannot read the dynamic symbols", path);
		goto out;
	}
	strs[str_sh->sh_size - 1] = '\0'; /* every name now ends within the table */
	nsyms = sym_sh->sh_size / sizeof(*syms);
	for (i = 1; i < nsyms && !found; i++) {
		const ElfW(Sym) *s = &syms[i];

		if (s->st_name >= str_sh->sh_size || strcmp(strs + s->st_name, MC_PASS_ENTRY))
			continue;
		found = 1;
		if (s->st_shndx == SHN_UNDEF || ELF64_ST_TYPE(s->st_info) != STT_FUNC ||
		    (ELF64_ST_BIND(s->st_info) != STB_GLOBAL &&
		     ELF64_ST_BIND(s->st_info) != STB_WEAK) ||
		    ELF64_ST_VISIBILITY(s->st_other) != STV_DEFAULT)
			ret = mc_err_set(err, MC_EPLUGIN,
					 "%s: %s is in the dynamic symbols but not an exported, "
					 "defined function; define it with MC_PASS_DEFINE from "
					 "<mcomp/pass.h>", path, MC_PASS_ENTRY);
	}
	if (!found)
		ret = mc_err_set(err, MC_EPLUGIN,
				 "%s: no %s() in this shared object, so it is not an mcomp pass; "
				 "define one with MC_PASS_DEFINE from <mcomp/pass.h>", path,
				 MC_PASS_ENTRY);
out:
	free(sh);
	free(syms);
	free(strs);
	return ret;
}

/* ---------------------------------------------------------------- memory a pass may point at */

/* The readable segments of every loaded object, gathered after a dlopen. */
struct segs {
	int n, cap;
	struct seg {
		uintptr_t lo, hi;
	} *s;
	int nomem;
};

static int add_segs(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct segs *g = arg;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R) || !ph->p_memsz)
			continue;
		if (g->n == g->cap) {
			int cap = g->cap ? 2 * g->cap : 64;
			struct seg *s = realloc(g->s, (size_t)cap * sizeof(*s));

			if (!s) {
				g->nomem = 1;
				return 1;
			}
			g->s = s;
			g->cap = cap;
		}
		g->s[g->n].lo = info->dlpi_addr + ph->p_vaddr;
		g->s[g->n].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
		g->n++;
	}
	return 0;
}

/* How many bytes from p on lie in one readable segment (0: p is not in one). */
static size_t seg_span(void *arg, const void *p)
{
	const struct segs *g = arg;
	uintptr_t a = (uintptr_t)p;

	for (int i = 0; i < g->n; i++)
		if (a >= g->s[i].lo && a < g->s[i].hi)
			return g->s[i].hi - a;
	return 0;
}

/* The text at s for the descriptor's field what: NULL (allowed when !need),
 * or readable, printable and at most max bytes. */
static int check_text(struct segs *g, const char *s, size_t max, int need, const char *path,
		      const char *what, struct mc_err *err)
{
	size_t avail;
	const char *nul;

	if (!s)
		return need ? mc_err_set(err, MC_EPLUGIN, "%s: the pass descriptor has no %s",
					 path, what) : 0;
	avail = seg_span(g, s);
	nul = avail ? memchr(s, '\0', avail < max + 1 ? avail : max + 1) : NULL;
	if (!nul && avail > max)
		return mc_err_set(err, MC_EPLUGIN, "%s: the pass's %s is too long (over %zu bytes)",
				  path, what, max);
	if (!nul)
		return mc_err_set(err, MC_EPLUGIN, "%s: the pass's %s %s", path, what,
				  avail ? "runs past the pass's memory" :
					  "points outside the pass's memory");
	if (!mc_text_printable(s, (size_t)(nul - s))) {
		char buf[256];

		return mc_err_set(err, MC_EPLUGIN, "%s: the pass's %s \"%s\" holds control "
				  "characters or bytes that are not UTF-8", path, what,
				  shown(s, 64, buf, sizeof(buf)));
	}
	return 0;
}

/* ---------------------------------------------------------------- descriptors held open */

/*
 * A pass is dlopen'd as /proc/self/fd/N, and glibc then knows the object by
 * that name (and adds as another name of it any name that opens the same
 * file): a later dlopen of the name returns the object without opening
 * anything. So descriptor N must not be reused for another file while an
 * object of that name is loaded. Each file loaded keeps one descriptor
 * open, and a second load of the same file (same device and inode) uses
 * that descriptor's name; a probe before each load closes the descriptors
 * whose objects are gone (never for a pass kept loaded for its ops).
 */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct held {
	int fd;
	dev_t dev;
	ino_t ino;
} *held;
static int nheld, capheld;

static void fd_name(int fd, char *buf, size_t n)
{
	snprintf(buf, n, "/proc/self/fd/%d", fd);
}

/* Whether an object is loaded that glibc knows by the name of fd. */
static int name_in_use(int fd)
{
	char name[64];
	void *h;

	fd_name(fd, name, sizeof(name));
	h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
	if (!h)
		return 0;
	dlclose(h);
	return 1;
}

static void release_held(void)
{
	int i = 0;

	while (i < nheld) {
		if (name_in_use(held[i].fd)) {
			i++;
			continue;
		}
		close(held[i].fd);
		held[i] = held[--nheld];
	}
}

/* The descriptor held for the file of st, or -1. */
static int held_for(const struct stat *st)
{
	for (int i = 0; i < nheld; i++)
		if (held[i].dev == st->st_dev && held[i].ino == st->st_ino)
			return held[i].fd;
	return -1;
}

/* Keeps fd open while its name is in use. 0, or -1 when out of memory. */
static int hold(int fd, const struct stat *st)
{
	if (nheld == capheld) {
		int cap = capheld ? 2 * capheld : 32;
		struct held *h = realloc(held, (size_t)cap * sizeof(*h));

		if (!h)
			return -1;
		held = h;
		capheld = cap;
	}
	held[nheld].fd = fd;
	held[nheld].dev = st->st_dev;
	held[nheld].ino = st->st_ino;
	nheld++;
	return 0;
}

/* ---------------------------------------------------------------- one pass */

/* Checks the descriptor's table: the host trusts it from here on. */
static int check_params(const struct mc_pass *pass, struct segs *g, const char *path,
			struct mc_err *err)
{
	void *conf;
	int ret;

	if (pass->conf_size > MAX_CONF)
		return mc_err_set(err, MC_EPLUGIN, "%s: pass '%s': conf_size %zu is more than %u "
				  "bytes; set it to sizeof the pass's config struct", path,
				  pass->name, pass->conf_size, MAX_CONF);
	if (mc_param_check_table(pass->params, pass->conf_size, seg_span, g, err))
		return mc_err_prefix(err, "%s: pass '%s'", path, pass->name);
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

/* Checks the ops a pass provides, before they are registered. */
static int check_ops(const struct mc_pass *pass, struct segs *g, const char *path,
		     struct mc_err *err)
{
	for (int i = 0;; i++) {
		const struct mc_op *const *slot = &pass->ops[i];
		const struct mc_op *op;
		char what[64];

		if (seg_span(g, slot) < sizeof(*slot))
			return mc_err_set(err, MC_EPLUGIN, "%s: pass '%s': its ops list runs out "
					  "of the pass's memory; end it with NULL", path,
					  pass->name);
		op = *slot;
		if (!op)
			return 0;
		if (i == MAX_OPS)
			return mc_err_set(err, MC_EPLUGIN, "%s: pass '%s': no NULL after %d ops; "
					  "end the ops list with NULL", path, pass->name, MAX_OPS);
		if (seg_span(g, op) < sizeof(*op))
			return mc_err_set(err, MC_EPLUGIN, "%s: pass '%s': op %d lies outside "
					  "the pass's memory", path, pass->name, i + 1);
		snprintf(what, sizeof(what), "op %d's name", i + 1);
		if (check_text(g, op->name, MC_PARAM_MAX_NAME, 1, path, what, err))
			return err->code;
		snprintf(what, sizeof(what), "op %d's help", i + 1);
		if (check_text(g, op->help, MC_PARAM_MAX_TEXT, 0, path, what, err))
			return err->code;
		if (op->attr_size > MAX_CONF)
			return mc_err_set(err, MC_EPLUGIN, "%s: op '%s': attr_size %zu is more "
					  "than %u bytes", path, op->name, op->attr_size, MAX_CONF);
		if (mc_param_check_table(op->attrs, op->attr_size, seg_span, g, err))
			return mc_err_prefix(err, "%s: op '%s': attributes", path, op->name);
	}
}

/* Checks what the descriptor says, reading only memory g vouches for. */
static int check_descriptor(const struct mc_pass *pass, struct segs *g, const char *path,
			    struct mc_err *err)
{
	char buf[256];

	if (seg_span(g, pass) < sizeof(pass->abi))
		return mc_err_set(err, MC_EPLUGIN, "%s: %s() returned a pointer outside the "
				  "pass's memory; return a static struct mc_pass", path,
				  MC_PASS_ENTRY);
	/* Only the first field may be read before this comparison. */
	if (pass->abi != MC_PASS_ABI)
		return mc_err_set(err, MC_EPLUGIN,
				  "%s: pass ABI %d should be %d; rebuild the pass against this "
				  "mcomp's headers (pkg-config --variable=abi mcomp prints %d)",
				  path, pass->abi, MC_PASS_ABI, MC_PASS_ABI);
	if (seg_span(g, pass) < sizeof(*pass))
		return mc_err_set(err, MC_EPLUGIN, "%s: the pass descriptor runs past the pass's "
				  "memory", path);
	if (check_text(g, pass->name, MC_PARAM_MAX_NAME, 1, path, "name", err))
		return err->code;
	if (!mc_name_valid(pass->name, MC_PARAM_MAX_NAME))
		return mc_err_set(err, MC_EPLUGIN, "%s: pass name '%s' is not usable; a pass "
				  "name has 1 to %d of a-z, 0-9, '_' and '-' (not first)", path,
				  shown(pass->name, 64, buf, sizeof(buf)), MC_PARAM_MAX_NAME);
	if (check_text(g, pass->version, MC_PARAM_MAX_NAME, 1, path, "version", err) ||
	    check_text(g, pass->description, MC_PARAM_MAX_TEXT, 0, path, "description", err) ||
	    check_text(g, pass->license, MC_PARAM_MAX_TEXT, 0, path, "license", err) ||
	    check_text(g, pass->author, MC_PARAM_MAX_TEXT, 0, path, "author", err))
		return err->code;
	if (!pass->run)
		return mc_err_set(err, MC_EPLUGIN, "%s: pass '%s' has no run operation", path,
				  pass->name);
	if (check_params(pass, g, path, err))
		return err->code;
	if (pass->ops && check_ops(pass, g, path, err))
		return err->code;
	return 0;
}

/*
 * Opens path as a pass: the checks before code runs on the descriptor fd,
 * dlopen of that very file, the descriptor's checks. *st gets the file's
 * identity.
 */
static const struct mc_pass *open_pass(const char *path, void **handle, struct stat *st,
				       struct mc_err *err)
{
	const struct mc_pass *(*entry)(void);
	const struct mc_pass *pass = NULL;
	struct segs g = { 0 };
	char name[64], *real = NULL, *slash;
	int fd = -1, held_fd = 0, by_fd;
	struct stat pst;
	void *h = NULL;

	*handle = NULL;
	/* stat first: a device is not even opened; fstat after: what was opened. */
	if (stat(path, &pst)) {
		mc_err_set(err, MC_EPLUGIN, "%s: cannot read (%s)", path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(pst.st_mode))
		goto not_regular;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		mc_err_set(err, MC_EPLUGIN, "%s: cannot open (%s)", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, st)) {
		mc_err_set(err, MC_EPLUGIN, "%s: cannot read (%s)", path, strerror(errno));
		goto fail;
	}
	pst = *st;
	if (!S_ISREG(st->st_mode))
		goto not_regular;
	if (!insecure_allowed()) {
		const char *why, *fix;

		why = loose_mode(st, 0, &fix);
		if (why) {
			refuse_mode(path, "the file", path, st, why, fix, err);
			goto fail;
		}
		real = realpath(path, NULL);
		if (!real) {
			mc_err_set(err, MC_EPLUGIN, "%s: cannot resolve (%s)", path,
				   strerror(errno));
			goto fail;
		}
		slash = strrchr(real, '/');
		if (slash)
			*slash = '\0';
		if (check_folders(path, real, err))
			goto fail;
	}
	if (check_elf(fd, (uint64_t)st->st_size, path, err))
		goto fail;

	pthread_mutex_lock(&held_lock);
	release_held();
	/* The file judged is the file loaded: by its descriptor, where /proc is,
	 * or by the descriptor held for the same file when it is loaded already. */
	fd_name(fd, name, sizeof(name));
	by_fd = !stat(name, &pst) && pst.st_dev == st->st_dev && pst.st_ino == st->st_ino;
	if (by_fd && held_for(st) >= 0) {
		fd_name(held_for(st), name, sizeof(name));
		h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
		held_fd = 0;
	} else {
		h = dlopen(by_fd ? name : path, RTLD_NOW | RTLD_LOCAL);
		held_fd = h && by_fd && !hold(fd, st);
		if (h && by_fd && !held_fd) {
			pthread_mutex_unlock(&held_lock);
			mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
			goto fail;
		}
	}
	pthread_mutex_unlock(&held_lock);
	if (!h) {
		const char *why = dlerror();
		size_t n = strlen(name);

		/* glibc names the file as it was given: /proc/self/fd/N. */
		if (why && by_fd && !strncmp(why, name, n) && why[n] == ':')
			why += n + 1 + (why[n + 1] == ' ');
		mc_err_set(err, MC_EPLUGIN,
			   "%s: not a loadable shared object (%s); remove it from the pass path "
			   "or rebuild it", path, why ? why : "dlopen failed");
		goto fail;
	}
	/* Without /proc: the path must still name the file judged. */
	if (!by_fd && (stat(path, &pst) || pst.st_dev != st->st_dev || pst.st_ino != st->st_ino)) {
		mc_err_set(err, MC_EPLUGIN, "%s: the file changed while it was loaded; load it "
			   "again", path);
		goto fail;
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
	dl_iterate_phdr(add_segs, &g);
	if (g.nomem) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	if (check_descriptor(pass, &g, path, err))
		goto fail;
	for (int i = 0; pass->ops && pass->ops[i]; i++) {
		/* Models will point at these ops: the pass stays loaded for good. */
		if (!dlopen(by_fd ? name : path, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) {
			mc_err_set(err, MC_EPLUGIN, "%s: cannot keep the pass loaded (%s)", path,
				   dlerror());
			goto fail;
		}
		if (mc_op_register(pass->ops[i], pass->name, err)) {
			mc_err_prefix(err, "%s", path);
			goto fail;
		}
	}
	free(g.s);
	free(real);
	if (!held_fd)
		close(fd);
	*handle = h;
	return pass;
not_regular:
	mc_err_set(err, MC_EPLUGIN, "%s: not a regular file (%s); only shared object files are "
		   "loaded as passes, remove it from the pass path",
		   path, S_ISFIFO(pst.st_mode) ? "a FIFO" : S_ISDIR(pst.st_mode) ? "a folder" :
			 S_ISCHR(pst.st_mode) || S_ISBLK(pst.st_mode) ? "a device" :
			 S_ISSOCK(pst.st_mode) ? "a socket" : "not a file");
fail:
	if (h)
		dlclose(h);
	free(g.s);
	free(real);
	if (fd >= 0 && !held_fd)
		close(fd);
	return NULL;
}

MC_API const struct mc_pass *mc_pass_open(const char *path, void **handle, struct mc_err *err)
{
	struct stat st;

	return open_pass(path, handle, &st, err);
}

/* ---------------------------------------------------------------- the registry */

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* The entry named name, or -1. */
static int find_name(const struct mc_registry *r, const char *name)
{
	unsigned mask;
	uint64_t h;

	if (!r->by_name.cap)
		return -1;
	mask = r->by_name.cap - 1;
	for (h = hash_name(name) & mask; r->by_name.slot[h]; h = (h + 1) & mask)
		if (!strcmp(r->e[r->by_name.slot[h] - 1].pass->name, name))
			return r->by_name.slot[h] - 1;
	return -1;
}

/* Indexes entry i (its name is not yet indexed); grows the index at half full. */
static int index_add(struct mc_registry *r, int i)
{
	struct index *x = &r->by_name;
	uint64_t h;

	if (2 * (unsigned)(r->n + 1) > x->cap) {
		unsigned cap = x->cap ? 2 * x->cap : 64;
		int *slot = calloc(cap, sizeof(*slot));

		if (!slot)
			return MC_ENOMEM;
		free(x->slot);
		x->slot = slot;
		x->cap = cap;
		for (int k = 0; k < r->n; k++)
			if (k != i) {
				for (h = hash_name(r->e[k].pass->name) & (cap - 1); slot[h];
				     h = (h + 1) & (cap - 1))
					;
				slot[h] = k + 1;
			}
	}
	h = hash_name(r->e[i].pass->name) & (x->cap - 1);
	while (x->slot[h])
		h = (h + 1) & (x->cap - 1);
	x->slot[h] = i + 1;
	return 0;
}

static uint64_t hash_id(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;

	return h ^ (h >> 29);
}

/* Marks the file dev:ino judged; 1 when it was already, 0 when not, or MC_ENOMEM. */
static int seen_before(struct seen *x, dev_t dev, ino_t ino)
{
	uint64_t h;

	if (2 * (x->n + 1) > x->cap) {
		unsigned cap = x->cap ? 2 * x->cap : 64;
		struct file_id *id = calloc(cap, sizeof(*id));
		unsigned char *used = calloc(cap, 1);

		if (!id || !used) {
			free(id);
			free(used);
			return MC_ENOMEM;
		}
		for (unsigned k = 0; k < x->cap; k++) {
			if (!x->used[k])
				continue;
			for (h = hash_id(x->id[k].dev, x->id[k].ino) & (cap - 1); used[h];
			     h = (h + 1) & (cap - 1))
				;
			used[h] = 1;
			id[h] = x->id[k];
		}
		free(x->id);
		free(x->used);
		x->id = id;
		x->used = used;
		x->cap = cap;
	}
	for (h = hash_id(dev, ino) & (x->cap - 1); x->used[h]; h = (h + 1) & (x->cap - 1))
		if (x->id[h].dev == dev && x->id[h].ino == ino)
			return 1;
	x->used[h] = 1;
	x->id[h].dev = dev;
	x->id[h].ino = ino;
	x->n++;
	return 0;
}

static int refuse(struct mc_registry *r, const char *msg)
{
	char **n = realloc(r->refused, (r->nrefused + 1) * sizeof(*n));
	size_t len = strlen(msg);
	char *s;

	if (!n)
		return MC_ENOMEM;
	r->refused = n;
	/* File names of the path reach the terminal: control bytes shown as \xNN. */
	s = malloc(4 * len + 8);
	if (!s)
		return MC_ENOMEM;
	shown(msg, len, s, 4 * len + 8);
	r->refused[r->nrefused++] = s;
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

/* Appends an entry to *e (of *n, *cap); 0 or MC_ENOMEM. */
static int push_entry(struct entry **e, int *n, int *cap, const struct mc_pass *pass,
		      const char *path, void *h, const struct stat *st, int shipped)
{
	if (*n == *cap) {
		int c = *cap ? 2 * *cap : 16;
		struct entry *ne = realloc(*e, (size_t)c * sizeof(*ne));

		if (!ne)
			return MC_ENOMEM;
		*e = ne;
		*cap = c;
	}
	(*e)[*n].path = strdup(path);
	if (!(*e)[*n].path)
		return MC_ENOMEM;
	(*e)[*n].pass = pass;
	(*e)[*n].handle = h;
	(*e)[*n].dev = st->st_dev;
	(*e)[*n].ino = st->st_ino;
	(*e)[*n].shipped = shipped;
	(*n)++;
	return 0;
}

/* The entry of the file with this identity, on the path or named by file. */
static const struct entry *find_file(const struct mc_registry *r, dev_t dev, ino_t ino)
{
	/* Linear: called once per pass a pipeline names by file. */
	for (int i = 0; i < r->n; i++)
		if (r->e[i].dev == dev && r->e[i].ino == ino)
			return &r->e[i];
	for (int i = 0; i < r->nextra; i++)
		if (r->extra[i].dev == dev && r->extra[i].ino == ino)
			return &r->extra[i];
	return NULL;
}

/* shipped: path is in the installed (or the build tree's) pass folder. */
static int add_file(struct mc_registry *r, const char *path, int shipped)
{
	struct mc_err err = { 0 };
	const struct mc_pass *pass;
	struct stat st;
	void *h;
	int i;

	/* The same file reached through two path entries is judged once. */
	if (!stat(path, &st)) {
		i = seen_before(&r->seen, st.st_dev, st.st_ino);
		if (i)
			return i < 0 ? i : 0;
	}
	pass = open_pass(path, &h, &st, &err);
	if (!pass)
		return err.code == MC_ENOMEM ? MC_ENOMEM : refuse(r, err.msg);
	i = find_name(r, pass->name);
	if (i >= 0) {
		/* A user's pass of a shipped one's name: refused at use (schema.c). */
		if (shipped && !r->e[i].shipped && add_shadow(r, pass->name, r->e[i].path, path)) {
			dlclose(h);
			return MC_ENOMEM;
		}
		mc_err_set(&err, MC_EPLUGIN,
			   "%s: pass '%s' is already provided by %s, found first on the pass "
			   "path; remove one of them or give this one another name",
			   path, pass->name, r->e[i].path);
		dlclose(h);
		return refuse(r, err.msg);
	}
	if (push_entry(&r->e, &r->n, &r->cap, pass, path, h, &st, shipped)) {
		dlclose(h);
		return MC_ENOMEM;
	}
	if (index_add(r, r->n - 1)) {
		r->n--;
		free(r->e[r->n].path);
		dlclose(h);
		return MC_ENOMEM;
	}
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
	int yes = 0;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !yes; i++) {
		char *other = realpath(dirs[i], NULL);

		yes = other && strcmp(other, real) == 0;
		free(other);
	}
	return yes;
}

static int scan_dir(struct mc_registry *r, const char *dir)
{
	struct mc_err err = { 0 };
	struct dirent **list;
	char *real, *file;
	int n, i, ret = 0, shipped;

	real = realpath(dir, NULL);
	if (!real) {
		/* A missing folder on the path is not an error; anything else is said. */
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		if (errno == ENOMEM)
			return MC_ENOMEM;
		mc_err_set(&err, MC_EPLUGIN, "%s: pass folder not searched (%s)", dir,
			   strerror(errno));
		return refuse(r, err.msg);
	}
	/* One refusal for a folder anyone may write to, not one per file. */
	if (!insecure_allowed() && check_folders(dir, real, &err)) {
		free(real);
		return err.code == MC_ENOMEM ? MC_ENOMEM : refuse(r, err.msg);
	}
	shipped = is_shipped_dir(real);
	n = scandir(real, &list, is_so, alphasort);
	if (n < 0) {
		free(real);
		return 0;
	}
	for (i = 0; i < n; i++) {
		size_t len = strlen(real) + strlen(list[i]->d_name) + 2;

		file = ret ? NULL : malloc(len);
		if (!ret && !file)
			ret = MC_ENOMEM;
		if (file) {
			snprintf(file, len, "%s/%s", real, list[i]->d_name);
			if (!mc_text_printable(file, strlen(file))) {
				mc_err_set(&err, MC_EPLUGIN, "%s: refused: the file name holds "
					   "control characters; rename it", file);
				ret = refuse(r, err.msg);
			} else {
				ret = add_file(r, file, shipped);
			}
			free(file);
		}
		free(list[i]);
	}
	free(list);
	free(real);
	return ret;
}

MC_API struct mc_registry *mc_registry_open(struct mc_err *err)
{
	struct mc_registry *r = calloc(1, sizeof(*r));
	char *path, *dir, *save = NULL;

	if (!r)
		goto nomem;
	path = search_path();
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

const struct mc_pass *mc_registry_open_file(struct mc_registry *r, const char *path,
					    const char **so, struct mc_err *err)
{
	const struct entry *e;
	const struct mc_pass *pass;
	struct stat st;
	void *h;

	pass = open_pass(path, &h, &st, err);
	if (!pass)
		return NULL;
	e = find_file(r, st.st_dev, st.st_ino);
	if (e) {
		/* glibc gave back the object already loaded: one handle is enough. */
		dlclose(h);
		*so = e->path;
		return e->pass;
	}
	if (push_entry(&r->extra, &r->nextra, &r->capextra, pass, path, h, &st, 0)) {
		dlclose(h);
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		return NULL;
	}
	*so = r->extra[r->nextra - 1].path;
	return pass;
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
	for (i = 0; i < r->nextra; i++) {
		dlclose(r->extra[i].handle);
		free(r->extra[i].path);
	}
	for (i = 0; i < r->nrefused; i++)
		free(r->refused[i]);
	for (i = 0; i < r->nshadows; i++) {
		free(r->shadows[i].name);
		free(r->shadows[i].path);
		free(r->shadows[i].shipped);
	}
	free(r->e);
	free(r->extra);
	free(r->by_name.slot);
	free(r->seen.id);
	free(r->seen.used);
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
	return mc_registry_get(r, find_name(r, name), path);
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
