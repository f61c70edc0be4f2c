"""`python -m pipeline.report [sweep=<parent run id>|last] [key=value ...]` — the comparison report of a sweep.

Reads a sweep from MLflow (a parent run tagged `sweep_parent=true`; its jobs are child runs tagged
`sweep_id=<parent run id>`), groups the FINISHED jobs by the config keys that varied (seed and per-run
bookkeeping left out), and writes into `<out>/<sweep id>/`:

- `curves.png`: per group, the IQM over seeds of the metric at each eval step with a 95% bootstrap band;
- `final_iqm.png`: per group, the IQM of `eval/final_return_mean` with its 95% interval and each run;
- `report.md` and `report.html`: the answer (pairwise probability of improvement, stated in words) on
  top, the table (n seeds, final IQM [95% CI], mean, steps to the threshold), the groups, the runs
  left out (FAILED, KILLED...) and the command that produced the report.

Every file is also logged as an artifact of the parent run under `report/`. The statistics are
rliable's: stratified bootstrap intervals (`get_interval_estimates`) of the interquartile mean
(`aggregate_iqm`) and of the probability of improvement (`probability_of_improvement`), with a fixed
seed so the same data always give the same report.

Curves: runs of one group are aligned on the union of their eval steps; a run with no point at a step
holds its last value (a run that stopped early once solved stays at its solved return), and the curve
starts at the first step that every run of the group has reached.
"""
