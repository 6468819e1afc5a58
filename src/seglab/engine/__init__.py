"""Training engine: the loop, optimizers and schedules, checkpoints."""
