"""CTranslate2, the deployment anchor: a stock fairseq ``transformer`` converted with CTranslate2's own fairseq
converter (float32 or int8) and decoded by its C++ beam search.

It is the engine a user who wants fast CPU translation takes today, so E-ATT's deployed ways are measured against
it (``fairseq-eatt-deploy-bench --anchor``). ctranslate2 is an optional extra (``pip install
"fairseq-eatt[deploy]"``; it pulls no torch). Its converter reads the checkpoint with ``torch.load(weights_only=True)``
and no allow-list, which refuses every fairseq checkpoint on torch >= 2.6 unless told to unpickle unsafely; here the
conversion runs inside the plugin's restricted loading instead (:func:`fairseq_eatt.compat.checkpoint_loading`).
"""
import os
from typing import Optional

INSTALL_HINT = 'pip install "fairseq-eatt[deploy]" (or pip install ctranslate2; it pulls no torch)'
QUANTIZATIONS = ("float32", "int8")


class AnchorError(RuntimeError):
    pass


def missing() -> Optional[str]:
    """Why CTranslate2 cannot run here, or None when it can."""
    try:
        import ctranslate2  # noqa: F401
        from ctranslate2.converters import FairseqConverter  # noqa: F401
    except ImportError as err:
        return f"ctranslate2 is not installed ({err}): {INSTALL_HINT}"
    return None


def convert(checkpoint: str, data: str, out_dir: str, quantization: str, source_lang: Optional[str] = None,
            target_lang: Optional[str] = None) -> str:
    """``checkpoint`` (a stock fairseq transformer, with its data directory ``data``) as a CTranslate2 model in
    ``out_dir``; returns ``out_dir``."""
    if quantization not in QUANTIZATIONS:
        raise AnchorError(f"quantization {quantization!r}: valid: {', '.join(QUANTIZATIONS)}")
    why = missing()
    if why:
        raise AnchorError(why)
    from ctranslate2.converters import FairseqConverter

    import torch

    from ..compat import CheckpointError, load_state, safe_globals, trusted

    try:
        load_state(checkpoint)  # read once here, so that its errors are the checkpoint's and the rest the data's
    except CheckpointError as err:
        raise AnchorError(f"--anchor {err}") from None
    converter = FairseqConverter(checkpoint, data, source_lang=source_lang, target_lang=target_lang,
                                 unsafe_deserialization=trusted())
    try:
        with torch.serialization.safe_globals(safe_globals()):  # the converter's own load: the same allow-list
            converter.convert(out_dir, quantization=quantization, force=True)
    except FileNotFoundError as err:  # fairseq's task reads the dictionaries of the data directory
        raise AnchorError(f"--anchor-data {data}: {err.filename or err}: no such file (the anchor's "
                          f"fairseq-preprocess output, with its dict.SRC.txt and dict.TGT.txt)") from None
    except RuntimeError as err:  # e.g. embeddings of another size: dictionaries that are not the checkpoint's
        raise AnchorError(f"--anchor {checkpoint} with --anchor-data {data}: the model does not load "
                          f"({str(err).splitlines()[0]}); give the data directory it was trained with") from None
    except (ValueError, NotImplementedError, KeyError) as err:  # the converter's refusal of an architecture
        raise AnchorError(f"--anchor {checkpoint}: CTranslate2's fairseq converter refused it ({err}); the anchor "
                          f"is a stock fairseq transformer (--arch transformer and its named variants)") from None
    return out_dir


def model_bytes(model_dir: str) -> int:
    """What CTranslate2 loads: the weights file (the vocabulary and config are a few KiB)."""
    return sum(os.path.getsize(os.path.join(model_dir, name)) for name in os.listdir(model_dir))
