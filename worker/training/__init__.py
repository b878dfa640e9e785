"""``worker train``: datasets, architectures, the renderings of scans and forms, fitting."""
