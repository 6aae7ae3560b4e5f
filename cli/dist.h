/* SPDX-License-Identifier: MIT */
/*
 * dist.h - the ranks of an MPI job, as the mcomp command sees them
 * (docs/distributed.md). Only the command uses MPI, and only through these
 * functions: libmcomp and the passes never link it. In a build without MPI
 * (configure --without-mpi) the same functions describe one process.
 */
#ifndef MCOMP_CLI_DIST_H
#define MCOMP_CLI_DIST_H

#include <mcomp/common.h>
#include <mcomp/train.h>

/*
 * Joins the job when a launcher started this process (mpirun, srun: its
 * environment says so), else stays one process of rank 0 of 1 and starts no
 * MPI at all. 0, or with err set (MC_EINVAL: started as one of several
 * ranks by a build without MPI).
 */
int dist_init(int *argc, char ***argv, struct mc_err *err);
/* Leaves the job (MPI_Finalize); nothing without one. */
void dist_finish(void);
int dist_rank(void);
int dist_size(void);
/* "Open MPI v4.1.4, ..." when built with MPI, else NULL. */
const char *dist_library(void);
/*
 * Ends every rank of the job at once with status (MPI_Abort), after this
 * rank's message is out; without a job, returns status.
 */
int dist_abort(int status);
/*
 * Every rank's text, in rank order, on rank 0: *all[r] (malloc'd, as is
 * *all) for r < dist_size(); other ranks get *all = NULL. Every rank must
 * call it. 0, or MC_ENOMEM / MC_ERUN with err set.
 */
int dist_gather_text(const char *mine, char ***all, struct mc_err *err);
/* The job's transfers for the library's data-parallel training (mc_dist_set), or
 * NULL without a job of several ranks. */
const struct mc_dist *dist_ops(void);
/* The smallest of every rank's value, on every rank (for a decision all take). */
int dist_min(int value);

#endif
