"""The RL loop (one LightningModule base, `loop.py`) and one module per algorithm family on it; replay
buffers, evaluation, distillation. Text/LM variants live beside them as `text_*.py`."""
