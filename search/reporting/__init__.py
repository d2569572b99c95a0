"""The reporting wing: a study folder drawn and written as report.html (page), its figures
(figures) and the Optuna study and importances they stand on (replay). Reads the study folder
only; `hpsearch report` and `hpsearch compare` are the commands on top of it.

Imports nothing itself: a command imports the module it needs."""
