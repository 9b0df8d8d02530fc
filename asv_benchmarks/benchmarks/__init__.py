"""asv benchmarks of pacnp (see ../README.md)."""
