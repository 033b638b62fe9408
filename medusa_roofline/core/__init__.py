"""Ground floor: errors, file I/O, dtypes, paths, devices, provenance, and the code-dependency reader."""
