"""Run folder layout, plots and the HTML report."""
