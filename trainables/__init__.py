"""Model builder, data loading and the one training function."""

import logging

# Library code: notes go to `logging`, and what shows them is the program's choice (hpsearch's
# commands print them, search.cli.show_notes). Without this, Python would print warnings to stderr
# wherever no handler is set, inside a served MLflow model too.
logging.getLogger(__name__).addHandler(logging.NullHandler())
