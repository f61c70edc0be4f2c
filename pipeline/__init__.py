"""RL fine-tuning of pretrained backbones: Hydra + gymnasium + timm + Lightning + MLflow."""

from pipeline._quiet import silence_known_noise

silence_known_noise()
