"""What people read: a run's plots (plots.py), HTML report (report.py, interactive charts in interactive.py),
per-class and per-image tables (tables.py), one evaluation's files (evaluation_files.py), the comparison of
several runs (compare.py) and what the commands print (console.py). The run folder's layout is
artifacts/run_dir.py's."""
