"""`python -m search.bench [all|overhead|datapath|efficiency|scaling|peer] [--quick]`: the
project's performance benchmarks, writing JSON and PNG plots to an output folder.

One module per benchmark; `baseline` (the bare PyTorch loop) and `peer_diy` (a search written
the way Ray Tune's documentation shows) are the deliberately separate comparators."""
