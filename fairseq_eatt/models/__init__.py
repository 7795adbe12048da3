from . import transformer_eatt  # noqa: F401
