"""`make bench`: the governed query path against raw DuckDB on TPC-H, measured in the same run."""
