"""Leaves every layer imports: errors, the env contract (`EnvSpec`), schedules, paths, signals, start-up time."""
