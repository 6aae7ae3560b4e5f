/* SPDX-License-Identifier: MIT */
/*
 * grad_groups.c - the validation every pass that trains with grouped steps
 * shares (train, prune, distill, ensemble-distill, quantize's qat): the
 * groups must split each batch evenly, and the ranks of the job must take
 * equal shares of the groups. See MC_GRAD_GROUPS_PARAM in mcomp/pass.h.
 */
#include <mcomp/pass.h>

int mc_ctx_check_grad_groups(struct mc_ctx *ctx, int grad_groups, int batch_size)
{
	int R = mc_dist_ranks();

	if (!mc_ctx_given(ctx, "grad_groups"))
		return 0;
	if (batch_size % grad_groups)
		return mc_ctx_error(ctx, "grad_groups", MC_EINVAL,
				    "%d groups do not divide batch_size %d into equal groups; set "
				    "grad_groups to a divisor of %d (or batch_size to a multiple "
				    "of %d)",
				    grad_groups, batch_size, batch_size, grad_groups);
	if (grad_groups % R)
		return mc_ctx_error(ctx, "grad_groups", MC_EINVAL,
				    "%d ranks do not divide grad_groups %d, so they would not take "
				    "equal shares of the groups; run a number of ranks that divides "
				    "%d (mpirun -np), or set grad_groups to a multiple of %d",
				    R, grad_groups, grad_groups, R);
	return 0;
}
