"""LightningModules of the backbones (edm.py, geoldm.py, flow_matching.py) on the shared interface of base.py, EDM's
property predictor that scores conditional generation (property_predictor.py), and the `_target_` builder (build.py)
that rebuilds them from configs and checkpoints."""
