from fracturekit.cli.app import main

__all__ = ["main"]
