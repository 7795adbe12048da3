"""fairseq-eatt: energy-efficient attention for fairseq, loaded with ``--user-dir fairseq_eatt``.

Where things live:
- ``attention/``      the attention variants (plain PyTorch) and their registry; E-ATT is ``attention/eatt/``
- ``models/``         fairseq glue: the ``transformer_eatt`` model, its architectures and per-position flags
- ``lr_scheduler/``   the E-ATT paper's learning-rate schedule (``--lr-scheduler eatt``)
- ``criterions/``     cross-entropy plus attention modules' auxiliary losses (adaptive span)
- ``compat.py``       makes fairseq checkpoints load on torch >= 2.6
- ``cli/``            console scripts (the demo)
"""
__version__ = "0.1.0"

from . import attention  # noqa: F401  (pure PyTorch, always importable)

try:
    import fairseq  # noqa: F401
except ImportError:  # the attention modules stay usable without fairseq
    fairseq = None

if fairseq is not None:
    from . import compat, criterions, lr_scheduler, models  # noqa: F401,E402

    compat.enable_fairseq_checkpoint_loading()
    compat.enable_model_help()
    compat.enable_cpu_distributed()
