"""Experiment recipes of the E-ATT paper: settings per task and scale, the runs each table needs, and a resumable
runner."""
