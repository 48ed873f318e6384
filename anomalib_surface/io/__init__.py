"""The lowest layer: reading and checking image and mask files, used by data, components and models alike."""
