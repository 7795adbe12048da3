"""A loaded model made smaller for inference: int8 dynamic quantization of its nn.Linear layers or a bfloat16 cast,
and the size of its weights. Used by fairseq-eatt-generate and by the deployment benchmark."""
import io
import logging

import torch

logger = logging.getLogger("fairseq_eatt.generate")  # the name fairseq-eatt-generate's log shows


def model_bytes(model: torch.nn.Module) -> int:
    """Size of the serialized state dict (quantized weights count as stored, int8 plus scales)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def convert(model: torch.nn.Module, quantize: str, dtype: str) -> torch.nn.Module:
    before = model_bytes(model)
    if quantize == "int8":
        model = torch.ao.quantization.quantize_dynamic(model.float().cpu(), {torch.nn.Linear}, dtype=torch.qint8)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    after = model_bytes(model)
    what = "int8 dynamic quantization of nn.Linear" if quantize == "int8" else dtype
    logger.info(f"model size {before / 2**20:.2f} MiB (float32) -> {after / 2**20:.2f} MiB ({what}), "
                f"{after / before:.1%} of the original")
    return model
