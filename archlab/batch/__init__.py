"""Batch rebuilds of the medallion from bronze (``lab backfill``): the stream's own refine, de-duplication
and window arithmetic, run over a time range of history by an embedded (DuckDB) or a distributed (Spark)
engine, and committed to the Delta tables one atomic replacement per table."""
