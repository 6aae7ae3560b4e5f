/* SPDX-License-Identifier: MIT */
/*
 * mcomp/common.h - export macro, error reporting, version numbers.
 *
 * Every fallible libmcomp function returns 0 on success or a negative MC_E*
 * code, and fills a caller-provided struct mc_err with a message that names
 * the file, the place and the fix. The library never prints for its caller
 * and never exits.
 */
#ifndef MCOMP_COMMON_H
#define MCOMP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a symbol of the public API; everything else in libmcomp is hidden. */
#define MC_API __attribute__((visibility("default")))

#define MC_VERSION "0.1.0"

enum mc_errcode {
	MC_OK = 0,
	MC_EINVAL = -1,	  /* invalid usage, pipeline or parameter: exit status 2 */
	MC_EIO = -2,	  /* a file could not be read or written */
	MC_ENOMEM = -3,	  /* out of memory */
	MC_ECORRUPT = -4, /* an input file is malformed */
	MC_ERUN = -5,	  /* a pass failed while running */
	MC_EPLUGIN = -6,  /* a pass plugin was refused */
	MC_EINTR = -7,	  /* stopped at a safe point after mc_interrupt (a signal) */
};

#define MC_ERR_MAX 8192

/*
 * struct mc_err - the text of the last error, for the caller to print.
 * Messages read "FILE:LINE:COL: what is wrong; how to fix it" where a place
 * is known, else "FILE: ..." and never end with a newline.
 */
struct mc_err {
	int code;
	char msg[MC_ERR_MAX];
};

/* Sets err (when not NULL) and returns code, so that callers can write
 * `return mc_err_set(err, MC_EINVAL, "%s: ...", path);`. */
MC_API int mc_err_set(struct mc_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message already in err; returns err->code. */
MC_API int mc_err_prefix(struct mc_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The process exit status for an error code: 2 for MC_EINVAL, else 1. */
MC_API int mc_exit_status(int code);

/*
 * Asks long work (training, a pipeline run) to stop at its next safe point
 * (between batches, between passes, before a file is put in place) and
 * return MC_EINTR. Async-signal-safe: made for a SIGINT/SIGTERM handler,
 * which passes the signal number; 0 withdraws the request. The library
 * installs no handler itself.
 */
MC_API void mc_interrupt(int sig);
/* The signal number given to mc_interrupt, or 0 when none is pending. */
MC_API int mc_interrupted(void);

/* Checked allocation: 64-byte aligned, zeroed. NULL on failure or when
 * nmemb * size overflows. Free with mc_free(), and only that. Blocks of
 * 4 MiB and more are zeroed lazily, page by page as they are first touched:
 * what is never written costs no memory. */
MC_API void *mc_calloc(size_t nmemb, size_t size);
MC_API void mc_free(void *p);

/*
 * The memory limit: inputs declare sizes (an architecture's shapes, a data
 * set's header), and whatever the library would allocate for them is
 * checked against this limit first, so that a small hostile or mistaken
 * file is refused with a message instead of exhausting the machine.
 *
 * mc_mem_limit_set sets it (bytes; UINT64_MAX: no limit; 0: back to the
 * default) with what set it, for messages ("--max-memory"). The default is
 * half of physical memory, or of the cgroup's memory limit (v2 memory.max,
 * v1 memory.limit_in_bytes) when that is lower. The library reads no
 * environment variable for it: the mcomp command reads MCOMP_MAX_MEMORY.
 */
MC_API void mc_mem_limit_set(uint64_t bytes, const char *what);
/* The limit in force (UINT64_MAX: none); *what (may be NULL) says where it comes from. */
MC_API uint64_t mc_mem_limit(const char **what);
/* 0 when need bytes fit the limit; else MC_ENOMEM with "WHAT needs SIZE of
 * memory, more than the limit of LIMIT (...); raise it with ...". */
MC_API int mc_mem_check(uint64_t need, const char *what, struct mc_err *err);
/* Parses a size: bytes, or a number with K, M, G, T (powers of 1024, an
 * optional "iB" or "B"), "N%" of physical memory, or "unlimited" (UINT64_MAX).
 * 0, or -1 when text is not a size above 0. */
MC_API int mc_mem_parse(const char *text, uint64_t *bytes);

/* Multiplies with overflow check: returns 0 and sets *out, or -1. */
MC_API int mc_mul_overflow(size_t a, size_t b, size_t *out);

/* Seconds on a monotonic clock. */
MC_API double mc_now(void);

/*
 * The median milliseconds of run(arg): two untimed warm-up runs, then timed
 * runs, at least min_reps and more until budget seconds have passed, at most
 * max_reps (1 to 200). One slow run on a shared machine does not move it.
 */
MC_API double mc_time_median(void (*run)(void *arg), void *arg, int min_reps, int max_reps,
			     double budget);

/*
 * GOMP_SPINCOUNT that mc_threads_bound_waits() starts a program with: about
 * 0.3 ms of spinning (`pause` takes ~60 ns on a recent Xeon) before a
 * waiting thread sleeps, long enough to carry a team across the serial
 * gaps between parallel regions on an idle machine (2000 cost 7% of MLP
 * training and 13% of CNN batch-1 latency there), short enough that a thread
 * waiting for a descheduled one soon gives its CPU back.
 */
#define MC_SPINCOUNT 5000

/*
 * For a program's main(), before anything else: when neither
 * OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, sets GOMP_SPINCOUNT to
 * MC_SPINCOUNT and executes the program again (/proc/self/exe, same argv),
 * because libgomp reads its wait policy only when it starts. libgomp's
 * default spins ~15 ms per wait, which collapses on a machine where other
 * processes are busy. Returns 0 when there was nothing to do; -1 when the
 * program could not be executed again (it runs on with the default).
 */
MC_API int mc_threads_bound_waits(char **argv);

#ifdef __cplusplus
}
#endif
#endif
