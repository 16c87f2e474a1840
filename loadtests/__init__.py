"""Load tests, benchmarks and test aids that drive tracker from outside."""
