"""`python -m pipeline.evaluate`: evaluate, record and log any policy the pipeline logged.

`source.py` resolves `model=`, `job.py` plays and logs, `saliency.py` draws where a pixel policy looks."""
