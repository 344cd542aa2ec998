"""``python -m canaryguard`` runs the command line."""

from canaryguard.cli import main

main()
