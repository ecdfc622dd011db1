"""avatar-pipeline: a talking-head video in, a FlashAvatar (3D Gaussian head avatar on FLAME) out.

The package holds one module per pipeline stage plus the libraries they share. The stage graph is
declared once, in :mod:`stages.graph`; the local runner, the Argo builder and the tests all read it.
"""

__version__ = "0.1.0"
