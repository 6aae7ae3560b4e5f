/* SPDX-License-Identifier: MIT */
/* placeholder until the ensemble-distill pass lands */
#include <mcomp/mcomp.h>

static const struct mc_param_def ens_params[] = { MC_PARAM_END };
static const struct mc_pass ens_pass = {
	.abi = MC_PASS_ABI, .name = "ensemble-distill", .version = "0.0",
	.description = "placeholder", .license = "MIT", .author = "the mcomp developers",
	.params = ens_params,
};
MC_PASS_DEFINE(ens_pass);
