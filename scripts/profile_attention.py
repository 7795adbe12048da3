"""Where a training step's time goes: E-ATT against vanilla attention in the same transformer_eatt model.

    python scripts/profile_attention.py [--steps 6] [--out results/refactor_bench/profile]

Builds transformer_eatt_small with each attention everywhere, runs forward + backward on the same random batch of
the shipped corpus's shape, and records PyTorch's profiler (CPU time per operator, and the Python-side share:
the time outside aten operators). Writes OUT.md and OUT.json with the command, machine, date and commit.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_eatt.provenance import provenance  # noqa: E402


def build(variant: str, vocab: int = 8000):
    """transformer_eatt_small with ``variant`` everywhere, parsed by fairseq as fairseq-train would."""
    import tempfile

    from fairseq import options, tasks

    from fairseq_eatt.provenance import PLUGIN_DIR

    data = tempfile.mkdtemp()
    for lang in ("en", "de"):
        with open(os.path.join(data, f"dict.{lang}.txt"), "w") as f:
            f.writelines(f"w{i} 1\n" for i in range(vocab - 4))
    argv = [data, "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de",
            "--arch", "transformer_eatt_small", "--eatt-recipe", "paper-prenorm"]
    for flag in ("--encoder-self-attention", "--decoder-self-attention", "--decoder-cross-attention"):
        argv += [flag, variant]
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
    task = tasks.setup_task(args)
    return task.build_model(args)


def profile(variant: str, steps: int, tokens: int = 2048, length: int = 16):
    torch.manual_seed(0)
    model = build(variant).train()
    bsz = tokens // length
    src = torch.randint(4, 8000, (bsz, length))
    tgt = torch.randint(4, 8000, (bsz, length))
    lengths = torch.full((bsz,), length)

    def step():
        out, _ = model(src, lengths, tgt)
        out.float().log_softmax(-1).mean().backward()

    for _ in range(2):  # warm-up
        step()
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    aten_self = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / 1e6 / steps
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"variant": variant, "step_s": wall, "aten_self_s": aten_self,
            "outside_aten_share": max(0.0, 1 - aten_self / wall) if wall else None,
            "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6 / steps, "calls": e.count // steps}
                    for e in top]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="results/refactor_bench/profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [profile(v, args.steps) for v in ("vanilla", "eatt")]
    record = {**provenance("python scripts/profile_attention.py " + " ".join(argv or sys.argv[1:]),
                           threads=True), "rows": rows}
    lines = ["# Where a training step's time goes: E-ATT and vanilla attention in transformer_eatt_small", "",
             f"Command: `{record['command']}`; date {record['date']}; commit {record['git_commit']}; one torch "
             "thread; a random batch of 2,048 target tokens (128 sentences of 16 tokens), pre-norm blocks.", "",
             "| attention | step (s) | aten operators' own time (s) | outside aten (Python, dispatch) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['step_s']:.3f} | {r['aten_self_s']:.3f} | "
                     f"{100 * r['outside_aten_share']:.1f}% |")
    for r in rows:
        lines += ["", f"## {r['variant']}: the operators with the most own time per step", "",
                  "| operator | own time (ms) | calls |", "|---|---|---|"]
        lines += [f"| `{t['op']}` | {1e3 * t['self_s']:.1f} | {t['calls']} |" for t in r["top"]]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(record, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
