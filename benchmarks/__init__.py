"""Benchmarks behind `make bench`; each module also runs alone (`python -m benchmarks.bench_x`)."""
