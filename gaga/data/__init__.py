"""gaga.data: see the module docstrings inside."""
