"""Heads on a backbone: Q (dueling), actor-critic, and the text heads (DRRN) in `text.py`."""
