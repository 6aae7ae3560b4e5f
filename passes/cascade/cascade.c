/* SPDX-License-Identifier: MIT */
/* placeholder until the cascade pass lands */
#include <mcomp/mcomp.h>

static const struct mc_param_def cascade_params[] = { MC_PARAM_END };
static const struct mc_pass cascade_pass = {
	.abi = MC_PASS_ABI, .name = "cascade", .version = "0.0", .description = "placeholder",
	.license = "MIT", .author = "the mcomp developers", .params = cascade_params,
};
MC_PASS_DEFINE(cascade_pass);
