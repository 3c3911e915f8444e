"""guidelab's Hydra configs (YAML), package data of the wheel, found as pkg://guidelab.conf."""
