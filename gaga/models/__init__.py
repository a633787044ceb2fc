"""LightningModules that wire networks, schedules and losses (edm.py), and the _target_ builder (build.py)."""
