"""I/O layer: bundled datasets, tier-history files, atomic writes. Nothing here computes margins."""
