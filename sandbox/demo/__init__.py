"""Demo material: a SYNTHETIC city whose datasets exercise registration, grants, analysis and suppression."""
