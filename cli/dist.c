/* SPDX-License-Identifier: MIT */
/*
 * dist.c - the ranks of an MPI job (cli/dist.h): Open MPI when configure
 * found it, one process otherwise.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/dist.h"

#ifdef MC_HAVE_MPI
#include <mpi.h>
#endif

static int rank, size = 1, joined;

/* The size of the job a launcher started this process in, from the variables
 * it sets (Open MPI's mpirun; srun with PMI or PMIx), or 0 when none did. */
static int launched_size(void)
{
	static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
					    "SLURM_STEP_NUM_TASKS" };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);

		if (v && atoi(v) > 0)
			return atoi(v);
	}
	/* PMIx (srun --mpi=pmix) may give the rank alone */
	return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 1 : 0;
}

#ifdef MC_HAVE_MPI

/*
 * Waits for an MPI request without holding a core for long. Open MPI's
 * blocking calls poll until the transfer completes: a rank that waits while
 * another works (rank 0 writing files or timing forwards, the ranks at the
 * end of the chain of a training step) keeps a core busy all that time, and
 * on a machine with fewer free cores than ranks and threads that core is
 * taken from the rank being waited for. So: poll for SPIN_S (the waits
 * inside a training step of ranks running alike end within it), then poll
 * every SLEEP_NS, giving the core away between polls.
 */
#define SPIN_S 0.002
#define SLEEP_NS 100000L

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int wait_polite(MPI_Request *req)
{
	const struct timespec nap = { 0, SLEEP_NS };
	double start = 0;
	int done = 0;

	for (long polls = 0;; polls++) {
		if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
			return -1;
		if (done)
			return 0;
		if (polls == 0)
			start = now_s();
		else if (now_s() - start > SPIN_S)
			nanosleep(&nap, NULL);
	}
}

int dist_init(int *argc, char ***argv, struct mc_err *err)
{
	int provided;

	if (joined || launched_size() == 0)
		return 0;
	/* OpenMP threads compute; only the main thread calls MPI. */
	if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
		return mc_err_set(err, MC_ERUN, "MPI_Init failed; run under mpirun or srun, or "
				  "as one process");
	joined = 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	return 0;
}

void dist_finish(void)
{
	MPI_Request req;

	/* the ranks done first wait for rank 0's files without a busy core */
	if (joined && size > 1 && MPI_Ibarrier(MPI_COMM_WORLD, &req) == MPI_SUCCESS)
		wait_polite(&req);
	if (joined)
		MPI_Finalize();
	joined = 0;
}

const char *dist_library(void)
{
	static char text[MPI_MAX_LIBRARY_VERSION_STRING];
	int len = 0;
	char *nl;

	MPI_Get_library_version(text, &len);
	nl = strpbrk(text, ",\n");
	if (nl)
		*nl = '\0';
	return text;
}

int dist_abort(int status)
{
	if (!joined || size == 1)
		return status;
	fflush(stdout);
	fflush(stderr);
	MPI_Abort(MPI_COMM_WORLD, status);
	return status;
}

int dist_gather_text(const char *mine, char ***all, struct mc_err *err)
{
	int len = (int)strlen(mine) + 1, *lens = NULL, *offs = NULL, total = 0, r;
	MPI_Request req;
	char *buf = NULL;

	*all = NULL;
	if (!joined || size == 1) {
		if (!(*all = calloc(1, sizeof(**all))) || !((*all)[0] = strdup(mine))) {
			free(*all);
			*all = NULL;
			return mc_err_set(err, MC_ENOMEM, "out of memory");
		}
		return 0;
	}
	if (rank == 0 && (!(lens = calloc((size_t)size, sizeof(int))) ||
			  !(offs = calloc((size_t)size, sizeof(int))))) {
		/* the other ranks wait in MPI_Gather: end them too */
		fprintf(stderr, "mcomp: rank 0: out of memory gathering the results\n");
		dist_abort(1);
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	if (MPI_Igather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, MPI_COMM_WORLD, &req) ==
	    MPI_SUCCESS)
		wait_polite(&req);
	if (rank == 0) {
		for (r = 0; r < size; r++) {
			offs[r] = total;
			total += lens[r];
		}
		buf = malloc((size_t)total);
		if (!buf) {
			fprintf(stderr, "mcomp: rank 0: out of memory gathering the results\n");
			dist_abort(1);
			return mc_err_set(err, MC_ENOMEM, "out of memory");
		}
	}
	if (MPI_Igatherv(mine, len, MPI_CHAR, buf, lens, offs, MPI_CHAR, 0, MPI_COMM_WORLD,
			 &req) == MPI_SUCCESS)
		wait_polite(&req);
	if (rank == 0) {
		*all = calloc((size_t)size, sizeof(**all));
		for (r = 0; *all && r < size; r++)
			if (!((*all)[r] = strdup(buf + offs[r])))
				break;
		if (!*all || r < size) {
			while (*all && r-- > 0)
				free((*all)[r]);
			free(*all);
			*all = NULL;
			mc_err_set(err, MC_ENOMEM, "out of memory");
		}
	}
	free(buf);
	free(lens);
	free(offs);
	return *all || rank ? 0 : MC_ENOMEM;
}

/* MPI counts are ints: a long message goes as several. */
#define CHUNK ((size_t)1 << 30)

static int mpi_send(void *arg, int to, const void *buf, size_t len)
{
	for (size_t at = 0; at < len || len == 0; at += CHUNK) {
		int n = (int)(len - at < CHUNK ? len - at : CHUNK);

		MPI_Request req;

		if (MPI_Isend((const char *)buf + at, n, MPI_BYTE, to, 0, MPI_COMM_WORLD, &req) !=
			    MPI_SUCCESS ||
		    wait_polite(&req))
			return -1;
		if (len == 0)
			break;
	}
	return 0;
}

static int mpi_recv(void *arg, int from, void *buf, size_t len)
{
	for (size_t at = 0; at < len || len == 0; at += CHUNK) {
		int n = (int)(len - at < CHUNK ? len - at : CHUNK);

		MPI_Request req;

		if (MPI_Irecv((char *)buf + at, n, MPI_BYTE, from, 0, MPI_COMM_WORLD, &req) !=
			    MPI_SUCCESS ||
		    wait_polite(&req))
			return -1;
		if (len == 0)
			break;
	}
	return 0;
}

static int mpi_bcast(void *arg, int root, void *buf, size_t len)
{
	for (size_t at = 0; at < len; at += CHUNK) {
		int n = (int)(len - at < CHUNK ? len - at : CHUNK);

		MPI_Request req;

		if (MPI_Ibcast((char *)buf + at, n, MPI_BYTE, root, MPI_COMM_WORLD, &req) !=
			    MPI_SUCCESS ||
		    wait_polite(&req))
			return -1;
	}
	return 0;
}

const struct mc_dist *dist_ops(void)
{
	static struct mc_dist d = { .send = mpi_send, .recv = mpi_recv, .bcast = mpi_bcast };

	if (!joined || size == 1)
		return NULL;
	d.rank = rank;
	d.size = size;
	return &d;
}

int dist_min(int value)
{
	int out = value;

	MPI_Request req;

	if (joined && size > 1 &&
	    MPI_Iallreduce(&value, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req) == MPI_SUCCESS)
		wait_polite(&req);
	return out;
}

#else /* one process */

int dist_init(int *argc, char ***argv, struct mc_err *err)
{
	int n = launched_size();

	(void)argc;
	(void)argv;
	if (n > 1)
		return mc_err_set(err, MC_EINVAL,
				  "started as one of %d ranks, but this mcomp was built without "
				  "MPI (mcomp help says so); rebuild with configure --with-mpi "
				  "(Debian: apt-get install libopenmpi-dev openmpi-bin), or run "
				  "one process",
				  n);
	return 0;
}

void dist_finish(void)
{
}

const char *dist_library(void)
{
	return NULL;
}

int dist_abort(int status)
{
	return status;
}

int dist_gather_text(const char *mine, char ***all, struct mc_err *err)
{
	*all = calloc(1, sizeof(**all));
	if (!*all || !((*all)[0] = strdup(mine))) {
		free(*all);
		*all = NULL;
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	return 0;
}

const struct mc_dist *dist_ops(void)
{
	return NULL;
}

int dist_min(int value)
{
	return value;
}

#endif

int dist_rank(void)
{
	return rank;
}

int dist_size(void)
{
	return size;
}
