"""Command-line verbs of ``bench``."""
