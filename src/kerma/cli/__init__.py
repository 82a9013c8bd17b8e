"""The ``kerma`` command line (Typer). Commands are thin calls into the packages below."""
