"""EDM's diffusion in plain torch: noise schedules, the forward process, losses and samplers."""
