"""gaga.models: see the module docstrings inside."""
