"""gaga.diffusion: see the module docstrings inside."""
