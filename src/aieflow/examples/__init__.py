"""Model builders for tests, benchmarks and the demo (not part of the compiler)."""
