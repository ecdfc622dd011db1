"""``python -m stages`` runs the ``avatar`` command."""

from stages.cli import entry

entry()
