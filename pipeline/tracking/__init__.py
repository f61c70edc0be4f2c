"""MLflow: the run lifecycle, batched metrics, owners and heartbeats of runs, checkpoints, plots."""
