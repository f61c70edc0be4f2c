"""RL fine-tuning of pretrained backbones: Hydra + gymnasium + timm + Lightning + MLflow.

The layout is the data flow (docs/architecture.md): core → config → envs → backbones → networks → algos
→ tracking → run → report.
"""

from pipeline.core import compat
from pipeline.core.quiet import silence_known_noise

silence_known_noise()
compat.install()  # modules logged or imported under their old flat paths still load
