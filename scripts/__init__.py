"""Command-line entry points (``cereb SUBCOMMAND`` or ``python -m scripts.SUBCOMMAND``).

Scripts parse arguments, configure logging and progress bars, call the packages and write run
folders. No science lives here.
"""
