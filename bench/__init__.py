"""SILA benchmarks: `python -m bench NAME` prints `name: ours=X ref=Y ratio=Z` lines, measured
side by side in one run. `python -m bench` lists them."""
