"""The study wing: one study's lifecycle, from its folder claimed (claim) through its phases
(phases: prepare, search, choose, finalize) run in order around the MLflow parent run and Ray
(study_run) to the final model (final) and what the run prints at its end (summary).

Imports nothing itself: a command imports the module it needs."""
