"""`python -m search.bench [all|numerics|overhead|datapath|efficiency|scaling|peer|scale] [--quick]`:
the project's performance benchmarks, writing JSON and PNG plots to an output folder.

One module per benchmark; `baseline` (the bare PyTorch loop) and `peer_diy` (a search written
the way Ray Tune's documentation shows) are the deliberately separate comparators; `simulated`
(a trial that sleeps instead of training) exists for `scale` and its test, and `mlflow_server`
starts the real MLflow server that `scale` and the server tests use."""
