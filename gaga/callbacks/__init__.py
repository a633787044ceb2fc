"""gaga.callbacks: see the module docstrings inside."""
