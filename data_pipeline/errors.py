from __future__ import annotations


class DataError(Exception):
    """MNIST could not be found, downloaded, parsed or verified.

    The message is one actionable line: it names the file or directory and the fix.
    """
