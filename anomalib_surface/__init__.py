"""anomalib-surface: surface-inspection anomaly detection methods as anomalib plugins.

This module is imported at interpreter start-up by the autoload ``.pth`` hook, so it must stay
free of heavy imports (no torch, no anomalib). Models, datamodules and post-processors live in
the sub-packages and are registered into anomalib when anomalib itself is imported.
"""

__version__ = "0.1.0"
