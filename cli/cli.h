/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the mcomp command's files share: exit statuses from errors,
 * the usage error, and loading the passes that register ops.
 */
#ifndef MCOMP_CLI_H
#define MCOMP_CLI_H

#include <mcomp/common.h>

/* Prints "mcomp: MESSAGE" and returns the exit status of err's code. */
int fail(struct mc_err *err);
/* Prints "mcomp: MESSAGE" and a pointer to `mcomp help`; returns 2. */
int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Loads every pass on the pass path once, so that the ops they provide are known. */
void register_plugin_ops(void);

/* SIGINT and SIGTERM ask the library to stop at a safe point (cli/main.c). */
void catch_signals(void);

/* mcomp sweep FILE --set KEY=V1,V2,... (cli/sweep.c) */
int cmd_sweep(int argc, char **argv);

/* mcomp profile MODEL [--batch N] [--train] [--seconds S] (cli/profile.c) */
int cmd_profile(int argc, char **argv);

#endif
