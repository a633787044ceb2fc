"""Datasets (QM9, GEOM-Drugs), their caches, splits and statistics, and the LightningDataModule."""
