"""notebooks: JupyterLab over notebooks/, with the project's library, DuckDB and PySpark in its kernels."""
