"""The tune wing: Ray and Optuna, where the trials run. The tuner's assembly (tuner), one trial
as a Tune trainable (trial), the searcher (searcher, sampler, tpe_fast, mirror), the schedulers
(asha, on the rules of rungs), the stoppers (budget), warm starts and the search distributions
they share with the report (warm, distributions), the cores shared at a search's end (cores)
and the Ray instance or cluster (cluster). Tune pickles several of these objects into the study
folder, so their old module paths live on as aliases (search/__init__.py).

Imports nothing itself: a command imports the module it needs."""
