"""The util wing: what every other wing uses and which knows nothing of studies: files written
whole (atomic), the command's clock (clock), safe YAML (yaml_safe), what a running study prints
(progress), fault injection (faults), credentials kept out of sight (credentials) and the
versions and commit a result came from (provenance).

Imports nothing itself: a command imports the module it needs."""
