"""The config tree's schema: one module per config group (types, defaults, checks within the group),
cross-group validation (`validate.py`) and the one conversion from Hydra's composed config (`load.py`)."""
