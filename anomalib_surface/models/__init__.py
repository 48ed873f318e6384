"""anomalib-surface models (each registered in the ``anomalib.models`` entry-point group)."""
