"""Model builder, data loading and the one training function."""
