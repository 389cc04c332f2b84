"""The ``btperp`` command line: thin wrappers over the Python API."""
