"""Loss primitives shared by the self-KD methods, in the notation of the methods notes.

`kl_t(target, student, T)` is `KL(softmax(target/T) || softmax(student/T))` with batch-mean
reduction, multiplied by T^2 when `t_squared` (Hinton et al. 2015 keep gradient magnitudes
comparable across temperatures; some official codes omit it, so it is a flag).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def kl_t(target_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float,
         t_squared: bool = True) -> torch.Tensor:
    """Temperature-scaled KL divergence from the target distribution to the student's."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_target = F.log_softmax(target_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_target, reduction="batchmean", log_target=True)
    return kl * temperature**2 if t_squared else kl


def soft_ce(target_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (rows sum to 1), batch mean."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
