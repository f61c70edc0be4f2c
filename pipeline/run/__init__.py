"""A job: one tracked run (`session.py`) for each stage — RL training, pretraining — plus resume,
chained stages, progress and the multirun callback."""
