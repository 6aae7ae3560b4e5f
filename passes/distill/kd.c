/* SPDX-License-Identifier: MIT */
/* placeholder: shared distillation code */
#include "kd.h"
