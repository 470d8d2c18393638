"""OpenSEM: Open Small Expert Models.

One module per stage (forge, train, judge, registry, sweep, report) around shared config,
workspace, tracking, hardware and model loading. Start reading at opensem/cli.py.
"""

__version__ = "0.1.0"
