"""vidgate's benchmarks: `make bench` (``python -m benchmarks``). They print figures and
append them to ``benchmarks/results/latest.json``; they never assert timings. See README.md."""
