/* SPDX-License-Identifier: MIT */
/* cascade - placeholder until the implementation lands. */
#include <mcomp/cascade.h>
