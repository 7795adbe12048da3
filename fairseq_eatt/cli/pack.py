"""fairseq-eatt-pack: a checkpoint trained with --weight-bits, with its quantized weights packed for shipping.

    fairseq-eatt-pack CHECKPOINT OUT

Each quantized map's float weight is replaced by its codes (8 // bits per byte for 1 and 2 bits, int8 for 8 bits)
and per-channel scales; the optimizer state is dropped. fairseq-generate and the plugin's tools load OUT like any
checkpoint, with the quantized weights (what the trained model computed with). Refused for a checkpoint without
--weight-bits.
"""
import argparse
import os
import sys

import torch


def main(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    args = p.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        p.error(f"{args.checkpoint}: no such checkpoint file")
    from fairseq import checkpoint_utils

    import fairseq_eatt  # noqa: F401  (registers the model)
    from ..compat import storable_cfg
    from ..data.text import atomic_output
    from ..quantization import pack_state, quantized_maps

    state = checkpoint_utils.load_checkpoint_to_cpu(args.checkpoint)
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint])
    maps = quantized_maps(models[0])
    if not maps:
        p.error(f"{args.checkpoint}: no quantized weights (train with --weight-bits 1, 2 or 8)")
    state["model"] = pack_state(state["model"], maps)
    state["last_optimizer_state"] = None
    state["cfg"] = storable_cfg(state.get("cfg"))
    with atomic_output(args.out, "wb") as handle:
        torch.save(state, handle)
    print(f"packed {len(maps)} quantized maps: {os.path.getsize(args.checkpoint) / 2**20:.2f} MiB -> "
          f"{os.path.getsize(args.out) / 2**20:.2f} MiB ({args.out})")


if __name__ == "__main__":
    sys.exit(main())
