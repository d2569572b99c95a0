"""Run the benchmarks: speed, overhead, search efficiency and scale.

Each PART (all of them by default) measures one thing and writes its figures as JSON and a PNG
plot to the output folder: numerics (bf16 or fp32, threads per trial), overhead (the service's
cost per trial-epoch against a bare PyTorch loop, memory), datapath (the data pipeline against
torchvision's), efficiency (TPE with ASHA against the grid), scaling (one worker against two),
peer (against a search written as Ray Tune's documentation shows), warmstart and scale (thousands
of trials). --quick runs tiny sizes, as the test suite does, and leaves out scaling's two-node
cluster (tests/test_two_node_cluster.py runs one); its figures mean nothing. Also
`python -m search.bench`.
"""

# One module per benchmark; `baseline` (the bare PyTorch loop) and `peer_diy` (a search written
# the way Ray Tune's documentation shows) are the deliberately separate comparators; `simulated`
# (a trial that sleeps instead of training) exists for `scale` and its test, and `mlflow_server`
# starts the real MLflow server that `scale` and the server tests use.
