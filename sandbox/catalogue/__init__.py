"""Dataset catalogue: registration, normalization to Parquet, versions and certificates."""
