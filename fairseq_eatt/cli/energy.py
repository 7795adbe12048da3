"""fairseq-eatt-energy: energy tables from the operation counts each attention variant declares.

    fairseq-eatt-energy [--l 22] [--d 512] [--heads 8] [--convention paper|complete|both]
                        [--table horowitz-45nm-fp32 ...] [--energy-table my_chip.json]
        the paper's Tables 1, 2 and 7, every registered variant and every self/cross hybrid

    fairseq-eatt-energy --path ckpt.pt --data DATA --subset test --out results/energy_ckpt
        energy per sentence and per token of a trained checkpoint at the real sentence lengths, with the
        measured nonzero ratios of its binarized inputs (writes OUT.md and OUT.json)

    fairseq-eatt-energy --decode --data DATA [--path ckpt.pt ...] [--variants all] [--batch-sizes 1,64]
        [--max-sentences 100] [--beam 4] --out results/energy_decoding
        the energy of translating with fairseq's beam search, counted as it runs: per sentence and per target
        token, arithmetic only and with memory traffic (each --path decodes for real; each of --variants is an
        untrained transformer_eatt_small forced to the source length, so every variant does the same work)

    fairseq-eatt-energy --roofline [--peak-gops P --bandwidth-gbs B | --measure-machine] [--memory dram|sram]
        arithmetic intensity of every variant's calls against a machine's balance point

    fairseq-eatt-energy --measure -- COMMAND ...
        joules of COMMAND from the hardware counters that can be read (powercap/RAPL, NVML), with the idle
        baseline; where none can be read it says so and reports nothing
"""
import argparse
import os
import shlex
import sys

from .. import reports
from ..energy import files
from ..attention.counts import CONVENTIONS
from ..energy.report import paper_tables
from ..energy.tables import BUILTIN, load_table
from ..attention.counts import MEMORY, MEMORY_HELP, PRECISION_BYTES


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-energy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--l", type=int, default=22, help="sequence length (queries = keys), the paper's 22")
    p.add_argument("--d", type=int, default=512, help="model dimension")
    p.add_argument("--heads", type=int, default=8, help="attention heads (used by the complete convention)")
    p.add_argument("--convention", choices=CONVENTIONS + ("both",), default="both")
    p.add_argument("--table", action="append", default=[], choices=sorted(BUILTIN),
                   help="extra built-in energy table(s) for Tables 1 and 7")
    p.add_argument("--energy-table", action="append", default=[], metavar="JSON",
                   help='user table: {"name": ..., "add": pJ, "mul": pJ, "cmp": pJ (optional)}')
    p.add_argument("--path", action="append", default=None,
                   help="checkpoint: report energy per sentence over --data/--subset instead (--decode: repeatable)")
    p.add_argument("--data", help="binarized data directory of --path")
    p.add_argument("--subset", default="test", help="split of --data (default test)")
    p.add_argument("--max-sentences", type=int, default=None, help="only the first N sentences of the split")
    p.add_argument("--cost", default="paper-asic", choices=sorted(BUILTIN),
                   help="energy table for --path (or --energy-table, whose first file then wins)")
    p.add_argument("--note", default=None, help="with --path --out: what the checkpoint is, for the report")
    p.add_argument("--out", help="write OUT.md and OUT.json (the record OUT.md is rendered from, with command, "
                                 "date, machine and commit)")
    p.add_argument("--memory", choices=sorted(MEMORY), default="dram",
                   help="memory assumption for traffic: " + "; ".join(f"{k}: {v}" for k, v in MEMORY_HELP.items()))
    p.add_argument("--precision", choices=sorted(PRECISION_BYTES), default="fp32", help="bytes per stored value")
    p.add_argument("--decode", action="store_true", help="energy of beam-search decoding, counted as it runs")
    p.add_argument("--variants", default="", help="--decode: untrained variants to count (comma-separated or all)")
    p.add_argument("--source-lang", default="en", help="--decode --variants: source language of --data")
    p.add_argument("--target-lang", default="de", help="--decode --variants: target language of --data")
    p.add_argument("--batch-sizes", default="1,64", help="--decode: batch sizes (sentences per batch)")
    p.add_argument("--beam", type=int, default=4, help="--decode: beam size")
    p.add_argument("--labels", default=None, help="--decode: comma-separated names of the --path checkpoints")
    p.add_argument("--pareto", metavar="DECODING_JSON", default=None,
                   help="BLEU vs decoding energy of every variant: a --decode --variants report (JSON), with BLEU "
                        "from --runs and measured joules from --measured")
    p.add_argument("--runs", default=os.path.join("results", "runs", "multi30k-en-de-small"),
                   help="--pareto: the small-scale run JSON files")
    p.add_argument("--measured", action="append", default=[], metavar="VARIANT=JSON@SENTENCES",
                   help="--pareto: a --measure report of decoding SENTENCES sentences with VARIANT (repeatable)")
    p.add_argument("--pareto-batch", default="1", help="--pareto: the batch size of the decoding report to plot")
    p.add_argument("--roofline", action="store_true", help="intensity of every variant's calls vs a machine")
    p.add_argument("--peak-gops", type=float, default=None, help="--roofline: the machine's peak GOP/s")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="--roofline: its memory bandwidth, GB/s")
    p.add_argument("--measure-machine", action="store_true",
                   help="--roofline: measure this machine's peak (matrix product) and bandwidth (copy)")
    p.add_argument("--measure", action="store_true",
                   help="--measure -- COMMAND ...: run COMMAND (everything after the flag) and report the joules of "
                        "every readable hardware energy counter")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="--measure: idle baseline before the command")
    p.add_argument("--powercap-root", default="/sys/class/powercap", help="--measure: where powercap zones are")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    if "--measure" in argv:  # everything after it is the measured command
        at = argv.index("--measure")
        argv, command = argv[:at + 1], argv[at + 1:]
        command = command[1:] if command[:1] == ["--"] else command
    args = p.parse_args(argv)
    args.measure = command
    if args.measure is not None:
        if not args.measure:
            p.error("--measure needs a command after it: fairseq-eatt-energy --measure -- fairseq-generate ...")
    if args.roofline and not args.measure_machine and (args.peak_gops is None or args.bandwidth_gbs is None):
        p.error("--roofline needs --peak-gops and --bandwidth-gbs, or --measure-machine")
    for flag in ("peak_gops", "bandwidth_gbs"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.path and not args.data:
        p.error("--path needs --data (the binarized data directory the checkpoint was trained on)")
    if args.path and len(args.path) > 1 and not args.decode:
        p.error("--path is given once, except with --decode")
    if args.decode:
        if not args.data:
            p.error("--decode needs --data (a binarized fairseq data directory with the --subset split)")
        if not args.path and not args.variants:
            p.error("--decode needs --path CHECKPOINT (repeatable) and/or --variants")
        try:
            from ..energy.decoding_report import batch_sizes

            args.batch_size_list = batch_sizes(args.batch_sizes)
        except ValueError as err:
            p.error(str(err))
        if args.beam < 1:
            p.error(f"--beam must be at least 1, got {args.beam}")
        if args.labels and len(args.labels.split(",")) != len(args.path or []):
            p.error("--labels needs one name per --path")
    elif args.path:
        args.path = args.path[0]
    for flag in ("l", "d", "heads"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if args.d % args.heads:
        p.error(f"--d ({args.d}) must be divisible by --heads ({args.heads})")
    try:
        args.extra = [BUILTIN[name] for name in args.table] + [load_table(path) for path in args.energy_table]
    except ValueError as err:
        p.error(str(err))
    return args


def command_line(argv) -> str:
    return shlex.join(["fairseq-eatt-energy"] + list(sys.argv[1:] if argv is None else argv))


def checkpoint_report(args, conventions, argv=None):
    from ..analysis.binarization import collect
    from ..energy.checkpoint import dataset_energy, formula_limits, markdown
    from ..fairseq_tools import load_checkpoint

    model, task = load_checkpoint(args.path, args.data)
    limits = formula_limits(model.args)
    if limits:  # a technique the formula cannot follow: refused before any work
        raise SystemExit(f"fairseq-eatt-energy --path {args.path}: trained or decoded with {', '.join(limits)}, "
                         f"which the per-sentence formula cannot follow; add --decode to count it as it runs")
    ratios = collect(model, task, args.subset, 4096, args.max_sentences).ratios()
    table = load_table(args.energy_table[0]) if args.energy_table else BUILTIN[args.cost]
    results = [dataset_energy(model, task, args.subset, table, c, ratios, args.max_sentences) for c in conventions]
    if args.out:
        print(reports.write(args.out, files.checkpoint_record(command_line(argv), results, args.note)), end="")
        print(f"wrote {args.out}.md and {args.out}.json")
    else:
        print("\n".join(markdown(r) for r in results))


def measure_report(args, argv=None):
    import json

    from ..energy.counters import NoCounterError, measure_command

    try:
        result = measure_command(args.measure, args.idle_seconds, args.powercap_root)
    except NoCounterError as err:
        raise SystemExit(f"fairseq-eatt-energy --measure: {err}") from None
    except FileNotFoundError as err:
        raise SystemExit(f"fairseq-eatt-energy --measure: cannot run {args.measure[0]!r}: {err.strerror}") from None
    if result["returncode"] != 0:  # joules of a failed run measure nothing: no record
        raise SystemExit(f"fairseq-eatt-energy --measure: the command exited with status {result['returncode']} "
                         f"after {result['seconds']:.1f} s; nothing was recorded: {' '.join(args.measure)}")
    for name, c in result["counters"].items():
        print(f"{name}: {c['joules']:.3f} J measured over {result['seconds']:.2f} s; idle {c['idle_watts']:.2f} W; "
              f"{c['joules_above_idle']:.3f} J above idle")
    if args.out:
        from ..data.text import atomic_output
        from ..provenance import provenance

        record = {"kind": "energy-measured", "result": result, **provenance(command_line(argv))}
        with atomic_output(args.out + ".json") as handle:
            json.dump(record, handle, indent=1)
        print(f"wrote {args.out}.json")
    return result


def roofline_report(args, argv=None):
    from ..energy.roofline import figure, measure_machine, record

    machine = measure_machine() if args.measure_machine else {"peak_gops": args.peak_gops,
                                                              "bandwidth_gbs": args.bandwidth_gbs}
    return publish_with_figure(args.out, record(command_line(argv), machine, args.l, args.d, args.heads,
                                                args.precision), figure)


def publish_with_figure(out, rec, figure):
    """A report with its figure: OUT.json, OUT.md and OUT.png when ``out`` is given; the markdown printed."""
    if out:
        reports.write(out, rec)
        figure(rec, out + ".png")
        print(f"wrote {out}.md, {out}.json and {out}.png")
    print(reports.render(rec))
    return rec


def pareto_report(args, argv=None):
    from ..energy.pareto import figure, parse_measured, record

    if not os.path.isfile(args.pareto):
        raise SystemExit(f"--pareto {args.pareto}: no such file (a fairseq-eatt-energy --decode --out report's JSON)")
    try:
        measured = parse_measured(args.measured)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if not os.path.isdir(args.runs):
        raise SystemExit(f"--runs {args.runs}: no such directory of run JSON files")
    rec = record(command_line(argv), args.pareto, args.runs, args.pareto_batch, measured)
    if not rec["points"]:
        raise SystemExit(f"--pareto: no variant of {args.pareto} at batch {args.pareto_batch} has a run in {args.runs}")
    return publish_with_figure(args.out, rec, figure)


def decode_report(args, argv=None):
    from ..attention import available_attentions
    from ..energy.decoding_report import markdown, measure_model, record
    from ..fairseq_tools import load_checkpoint
    from ..perf.bench import PRESETS, criterion, model_args
    from ..perf.worker import batches, build

    table = load_table(args.energy_table[0]) if args.energy_table else BUILTIN["horowitz-45nm-fp32"]
    limit = args.max_sentences

    def samples(task, model):
        out = {}
        for bsz in args.batch_size_list:
            chosen, seen = [], 0
            for sample in batches(task, model, args.subset, max_sentences=bsz, shuffle=False):
                if limit and seen >= limit:
                    break
                chosen.append(sample)
                seen += sample["nsentences"]
            out[bsz] = chosen
        return out

    rows = []
    labels = args.labels.split(",") if args.labels else list(args.path or [])
    for label, path in zip(labels, args.path or []):
        model, task = load_checkpoint(path, args.data)
        rows.append({"label": label, "path": path, "decoding": "real",
                     "batches": measure_model(model, task, samples(task, model), table, args.beam, False, 200)})
        print(f"counted {label}", flush=True)
    names = available_attentions() if args.variants == "all" else [v for v in args.variants.split(",") if v]
    for name in names:
        _, task, model, _ = build({"data": args.data, "src": args.source_lang, "tgt": args.target_lang,
                                   "max_tokens": 4096, "criterion": criterion(name),
                                   "model_args": model_args(name, PRESETS["small"])})
        rows.append({"label": f"`{name}` (untrained, source length)", "variant": name, "decoding": "forced",
                     "batches": measure_model(model.eval(), task, samples(task, model), table, args.beam, True,
                                              200)})
        print(f"counted {name}", flush=True)
    rec = record(command_line(argv), rows, table, args.beam, args.note)
    if args.out:
        reports.write(args.out, rec)
        print(f"wrote {args.out}.md and {args.out}.json")
    print(markdown(rec))
    return rec


def main(argv=None):
    args = parse_args(argv)
    if args.pareto:
        return pareto_report(args, argv)
    if args.decode:
        return decode_report(args, argv)
    if args.measure is not None:
        return measure_report(args, argv)
    if args.roofline:
        return roofline_report(args, argv)
    conventions = CONVENTIONS if args.convention == "both" else (args.convention,)
    if args.path:
        return checkpoint_report(args, conventions, argv)
    if args.out:
        record = files.tables_record(command_line(argv), conventions, args.extra, args.l, args.d, args.heads)
        reports.write(args.out, record)
        print(f"wrote {args.out}.md and {args.out}.json")
        return
    print(paper_tables(args.l, args.d, args.heads, conventions, args.extra), end="")


if __name__ == "__main__":
    main()
