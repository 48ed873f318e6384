"""Utilities of anomalib-surface that are not model parts."""
