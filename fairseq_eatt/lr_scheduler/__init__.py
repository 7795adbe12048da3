from . import eatt_schedule  # noqa: F401
