"""Helpers shared by the analysis commands."""
from ..data.text import atomic_output
from ..fairseq_tools import load_checkpoint  # noqa: F401  (the analysis commands' import)


def write_atomically(path: str, write, binary: bool = False):
    """Call ``write(handle)`` on a temporary file that replaces ``path`` only once complete."""
    with atomic_output(path, "wb" if binary else "w") as handle:
        write(handle)
