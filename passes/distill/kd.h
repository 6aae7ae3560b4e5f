/* SPDX-License-Identifier: MIT */
/* placeholder */
#include <mcomp/mcomp.h>
