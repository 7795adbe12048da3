"""One measurement of fairseq-eatt-bench in a fresh process, so that its peak memory is its own.

    python -m fairseq_eatt.perf.worker '{"mode": "train" | "generate", "data": ..., "model_args": [...], ...}'

Prints one JSON line: throughput per repeat and the peak memory (resident set on the CPU, allocator peak on a
GPU). The model is built by fairseq from command-line style arguments, exactly as fairseq-train builds it.
"""
import json
import resource
import sys
import time
from typing import Dict, List

import torch

from ..provenance import PLUGIN_DIR


def rss_mib() -> float:
    """Peak resident set of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(spec: Dict):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [spec["data"], "--user-dir", PLUGIN_DIR, "--task", "translation", "--source-lang", spec["src"],
            "--target-lang", spec["tgt"], "--criterion", spec.get("criterion", "label_smoothed_cross_entropy"),
            "--label-smoothing", "0.1",
            "--optimizer", "adam", "--lr", "1e-4", "--max-tokens", str(spec["max_tokens"]), "--seed", "1",
            *spec["model_args"]]
    if not spec.get("gpu"):
        argv.append("--cpu")
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion


def batches(task, model, split: str, max_tokens=None, max_sentences=None, count=None, shuffle=True,
            spread=False) -> List[Dict]:
    """``count`` batches of ``split`` in fairseq's order for seed 1, the same for every model: the first ones, or
    with ``spread`` evenly spaced ones (fairseq sorts an unshuffled split by length: short and long sentences)."""
    from fairseq import utils

    task.load_dataset(split)
    itr = task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=max_tokens, max_sentences=max_sentences,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, required_batch_size_multiple=1, seed=1, num_workers=0,
    ).next_epoch_itr(shuffle=shuffle)
    out = []
    for sample in itr:
        out.append(sample)
        if count is not None and len(out) >= count and not spread:
            break
    if spread and count is not None and len(out) > count:
        out = [out[round(i * (len(out) - 1) / max(1, count - 1))] for i in range(count)]
    return out


def to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device.type == "cuda" else sample


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_train(spec: Dict) -> Dict:
    cfg, task, model, criterion = build(spec)
    device = torch.device("cuda" if spec.get("gpu") else "cpu")
    model.to(device).train()
    criterion.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = batches(task, model, "train", max_tokens=spec["max_tokens"], count=spec["warmup"] + spec["steps"])
    if len(data) < spec["warmup"] + spec["steps"]:
        raise SystemExit(f"the training split has only {len(data)} batches of {spec['max_tokens']} tokens")

    half = bool(spec.get("fp16"))  # mixed precision on a GPU: float16 autocast, float32 weights, loss scaling
    scaler = torch.amp.GradScaler("cuda", enabled=half)

    def step(sample):
        with torch.autocast("cuda", dtype=torch.float16, enabled=half):
            loss, _, _ = criterion(model, to_device(sample, device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return sample["ntokens"]

    rss_before = rss_mib()  # model, optimizer and batches in memory, nothing computed yet
    for sample in data[:spec["warmup"]]:
        step(sample)
    rates = []
    for _ in range(spec["repeats"]):
        synchronize(device)
        start, tokens = time.perf_counter(), 0
        for sample in data[spec["warmup"]:]:
            tokens += step(sample)
        synchronize(device)
        rates.append(tokens / (time.perf_counter() - start))
    return {"target_tokens_per_s": rates, "params": sum(p.numel() for p in model.parameters()),
            "rss_before_mib": rss_before}


@torch.no_grad()
def measure_generate(spec: Dict) -> Dict:
    from fairseq.dataclass.configs import GenerationConfig

    cfg, task, model, _ = build(spec)
    device = torch.device("cuda" if spec.get("gpu") else "cpu")
    model.to(device).eval()
    if spec.get("fp16"):
        model.half()
    # every hypothesis as long as its source: the same decoding work for every model, trained or not
    generator = task.build_generator([model], GenerationConfig(beam=spec["beam"], match_source_len=True))
    data = batches(task, model, spec["gen_subset"], max_sentences=spec["gen_batch_size"],
                   count=spec["gen_batches"], shuffle=False, spread=True)
    task.inference_step(generator, [model], to_device(data[0], device))  # warm-up
    rss_before = rss_mib()
    rates, lengths = [], []
    for _ in range(spec["repeats"]):
        synchronize(device)
        start, sentences, produced = time.perf_counter(), 0, 0
        for sample in data:
            hypos = task.inference_step(generator, [model], to_device(sample, device))
            sentences += len(hypos)
            produced += sum(len(h[0]["tokens"]) for h in hypos)
        synchronize(device)
        rates.append(sentences / (time.perf_counter() - start))
        lengths.append(produced / max(1, sentences))
    return {"sentences_per_s": rates, "mean_output_tokens": lengths, "rss_before_mib": rss_before}


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("gpu"):
        torch.cuda.reset_peak_memory_stats()
    result = measure_train(spec) if spec["mode"] == "train" else measure_generate(spec)
    result["peak_rss_mib"] = rss_mib()
    result["working_rss_mib"] = result["peak_rss_mib"] - result["rss_before_mib"]
    if spec.get("gpu"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
