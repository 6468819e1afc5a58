"""What a command does end to end, on top of every floor below: one run (runs.py: fit -> evaluate -> report
-> trackers; evaluating a run folder or export), comparisons and k-fold cross-validation (experiments.py),
hyperparameter search (tuning.py), and the config `seglab init` writes for a data folder (init_config.py)."""
