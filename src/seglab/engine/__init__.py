"""Training engine: `fit` (trainer.py) over the parts of one training (parts.py), the epoch loop (loop.py),
optimizers and schedules (optim.py), the time budget's plan (budget.py), precision, EMA, torchrun
(distributed.py) and a run's progress record (state.py). The checkpoint format is artifacts/checkpoint.py's."""
