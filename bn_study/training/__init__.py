"""Training: the jitted steps, the optimizer, the loop, evaluation, PreciseBN,
the instruments, checkpoints, preemption, and the one validation of a
config."""
