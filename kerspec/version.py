"""kerspec's version. Its own module: the package's top level names the API, and the API's modules
(run folders, sweeps) record the version, so reading it from the top level made an import cycle."""

__version__ = "0.1.0"
