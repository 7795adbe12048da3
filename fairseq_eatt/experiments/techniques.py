"""The survey's techniques at small scale: curves and comparison rows from the techniques recipe's runs.

For the trained runs of ``fairseq-eatt-experiment techniques`` (vanilla and E-ATT, each alone and with ternary or
binary weights, encoder token pruning or early exit), every checkpoint is decoded in-process with fairseq's
SequenceGenerator (beam and length penalty of the setting, fairseq-generate's post-processing: BPE removed, Moses
detokenized) on dev and test, scored with sacreBLEU, at several settings of its technique:

- pruning runs (trained keeping 70%): keep ratios 1 to 0.3; the base runs with pruning added at inference only;
- early-exit runs: confidence thresholds 1 (every layer) to 0.4, with the mean exit depth of every decoding step;
Each technique's row uses one setting, fixed before looking at test BLEU: pruning its training ratio, early exit the
lowest threshold whose dev BLEU is within 1 BLEU of its full depth. Rows add parameters, stored size (binary/ternary
maps at 1/2 bits per weight plus a scale per output channel), and decoding energy counted by
:func:`fairseq_eatt.energy.decoding.count_generation` (declared = executed for every attention call).
"""
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple

from ..reports import renderer
from . import recipes as R
from .significance import LEGEND, UNTESTED

PRUNE_RATIOS = (1.0, 0.85, 0.7, 0.5, 0.3)
BASE_PRUNE_RATIOS = (0.85, 0.7, 0.5, 0.3)  # pruning after encoder layer 1 added to the base runs at inference
EXIT_THRESHOLDS = (1.0, 0.95, 0.9, 0.8, 0.6, 0.4)
TRAINED_KEEP_RATIO = 0.7  # the pruning runs' training ratio (recipes.TECHNIQUE_CONFIGS)
EXIT_DEV_TOLERANCE = 1.0  # BLEU: the chosen threshold's dev BLEU is at most this far below full depth's
RECIPE = "paper-prenorm"  # the techniques recipe's E-ATT recipe (the plugin's default)
ENERGY_TABLE = "horowitz-45nm-fp32"


def settings_of(config: str) -> List[Dict]:
    """The model overrides each configuration is decoded with ({} = as trained)."""
    if config in ("vanilla", "eatt"):
        return [{}] + [{"prune_layer": 1, "prune_keep_ratio": r} for r in BASE_PRUNE_RATIOS]
    if config.endswith("+prune"):
        return [{"prune_keep_ratio": r} for r in PRUNE_RATIOS]
    if config.endswith("+exit"):
        return [{"exit_threshold": t} for t in EXIT_THRESHOLDS]
    return [{}]


def label_of(overrides: Dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "as trained"


def run_of(config: str, task: str = R.SMALL_TASK, scale: str = "small", seed: int = 1) -> R.RunSpec:
    import dataclasses

    return dataclasses.replace(R.study_run(task, scale, config, seed), recipe=RECIPE)


# ---- decoding --------------------------------------------------------------------------------------------------------

def load(checkpoint: str, data_bin: str, overrides: Dict):
    from fairseq import checkpoint_utils

    import fairseq_eatt  # noqa: F401  (registers the model)

    arg_overrides = {"data": data_bin, "checkpoint_activations": False, **overrides}
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=arg_overrides)
    model = models[0]
    model.eval()
    return model, task, cfg


def translate(model, task, split: str, beam: int, lenpen: float, src: str, tgt: str, detok: bool,
              max_sentences: int = 64) -> Tuple[List[str], Dict]:
    """Hypotheses of ``split`` in corpus order, post-processed as fairseq-generate does, and what decoding did:
    seconds, source tokens kept by the encoder, exit depth of every decoding step of every hypothesis."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    from ..deploy.ort_translate import postprocessor
    from ..perf.worker import batches

    postprocess = postprocessor(tgt if detok else None)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, len_penalty=lenpen,
                                  max_len_a=0, max_len_b=200)
    seen = {"kept": 0, "source": 0, "depth": 0, "steps": 0}
    encoder_forward, decoder_forward = model.encoder.forward_torchscript, model.decoder.forward

    def encoder_watch(net_input):
        out = encoder_forward(net_input)
        seen["kept"] += int((~out["encoder_padding_mask"][0]).sum())
        seen["source"] += int(net_input["src_tokens"].ne(task.source_dictionary.pad()).sum())
        return out

    def decoder_watch(*args, **kwargs):
        out = decoder_forward(*args, **kwargs)
        depth = out[1].get("exit_layer", [None])[0] if isinstance(out[1], dict) else None
        if depth is not None:
            seen["depth"] += int(depth.sum())
            seen["steps"] += depth.numel()
        return out

    model.encoder.forward_torchscript, model.decoder.forward = encoder_watch, decoder_watch
    hyps: Dict[int, str] = {}
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for sample in batches(task, model, split, max_sentences=max_sentences, shuffle=False):
                for sid, found in zip(sample["id"].tolist(), generator.generate([model], sample)):
                    text = task.target_dictionary.string(found[0]["tokens"].int(),
                                                         extra_symbols_to_ignore={task.target_dictionary.eos()})
                    hyps[sid] = postprocess(text)
    finally:
        del model.encoder.forward_torchscript, model.decoder.forward
    seconds = time.perf_counter() - start
    ordered = [hyps[i] for i in range(len(hyps))]
    stats = {"seconds": round(seconds, 2), "sentences": len(ordered),
             "kept_ratio": round(seen["kept"] / seen["source"], 4) if seen["source"] else None,
             "mean_exit_depth": round(seen["depth"] / seen["steps"], 4) if seen["steps"] else None}
    return ordered, stats


def cached(job: Dict, compute) -> Dict:
    """``compute(model, task)`` for the job's checkpoint and overrides, in one thread; kept in ``job["cache"]`` so
    that an interrupted report resumes (each job runs in a worker process)."""
    import torch

    from ..data.text import atomic_output

    torch.set_num_threads(1)
    if os.path.exists(job["cache"]):
        with open(job["cache"], encoding="utf-8") as handle:
            return json.load(handle)
    model, task, _ = load(job["checkpoint"], job["data_bin"], job["overrides"])
    result = compute(job, model, task)
    with atomic_output(job["cache"]) as handle:
        json.dump(result, handle, indent=1)
    return result


def _decode(job: Dict, model, task) -> Dict:
    import sacrebleu

    point = {"config": job["config"], "overrides": job["overrides"], "label": label_of(job["overrides"])}
    for split, key in (("valid", "dev"), ("test", "test")):
        hyps, stats = translate(model, task, split, job["beam"], job["lenpen"], job["src"], job["tgt"],
                                job["detok"])
        with open(job["references"][split], encoding="utf-8") as handle:
            refs = [line.rstrip("\n") for line in handle]
        if len(refs) != len(hyps):
            raise RuntimeError(f"{job['checkpoint']}: {len(hyps)} hypotheses of {split} for {len(refs)} references")
        metric = sacrebleu.BLEU(tokenize="13a" if job["detok"] else "none")
        score = metric.corpus_score(hyps, [refs])
        point[key] = {"bleu": round(score.score, 2), "signature": str(metric.get_signature()), **stats}
    return point


def decode_point(job: Dict) -> Dict:
    """One (run, setting): dev and test BLEU and what decoding did."""
    return cached(job, _decode)


# ---- rows ------------------------------------------------------------------------------------------------------------

def stored_bytes(model) -> float:
    """Bytes of the model as stored for decoding: float32 parameters, binary/ternary/8-bit maps packed."""
    from ..quantization import QuantizedLinear

    total = sum(p.numel() * 4 for p in model.parameters())
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            total -= module.weight.numel() * 4 - module.stored_bytes(4)
    return float(total)


def _count_energy(job: Dict, model, task) -> Dict:
    from ..energy.decoding import count_generation
    from ..energy.decoding_report import summarize
    from ..energy.tables import BUILTIN
    from ..perf.worker import batches

    samples = batches(task, model, "test", max_sentences=1, shuffle=False)[: job["sentences"]]
    count = count_generation(model, task, samples, beam=job["beam"])
    summary = summarize(count, BUILTIN[ENERGY_TABLE])
    ops = count.total_ops()
    summary.update(params=sum(p.numel() for p in model.parameters()), stored_bytes=stored_bytes(model),
                   mul_per_sentence=ops.mul / count.sentences, add_per_sentence=ops.add / count.sentences,
                   attention_mul_per_sentence=count.attention().mul / count.sentences)
    return summary


def energy_row(job: Dict) -> Dict:
    """Decoding energy of the first ``sentences`` test sentences at batch 1."""
    return cached(job, _count_energy)


def chosen(config: str, points: List[Dict]) -> Optional[Dict]:
    """The point of a configuration's row (see the module docstring), chosen without its test BLEU."""
    mine = [p for p in points if p["config"] == config]
    if not mine:
        return None
    if config.endswith("+prune"):
        return next((p for p in mine if p["overrides"].get("prune_keep_ratio") == TRAINED_KEEP_RATIO), None)
    if config.endswith("+exit"):
        full = next((p for p in mine if p["overrides"].get("exit_threshold") == 1.0), None)
        if full is None:
            return None
        within = [p for p in mine if p["dev"]["bleu"] >= full["dev"]["bleu"] - EXIT_DEV_TOLERANCE]
        return min(within, key=lambda p: (p["dev"]["mean_exit_depth"], -p["dev"]["bleu"]))
    return next((p for p in mine if not p["overrides"]), None)


def measure(workdir: str, results: str, jobs: int = 1, sentences: int = 100, configs: Optional[List[str]] = None,
            log=print) -> Dict:
    """Decode every available run at its settings, count the chosen rows' energy; returns the record's body."""
    from . import runner
    from .settings import setting

    configs = configs or ["vanilla", "eatt", *R.TECHNIQUE_CONFIGS]
    s = setting(R.SMALL_TASK, "small")
    data = runner.prepare_task(s, os.path.join(workdir, "data"), None)
    cache = os.path.join(workdir, "techniques")
    os.makedirs(cache, exist_ok=True)
    found, missing = {}, []
    for config in configs:
        run = run_of(config)
        path = runner.result_path(results, run)
        if not os.path.exists(path):
            missing.append(config)
            continue
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        checkpoint = os.path.join(runner.run_dir_of(workdir, run, result["config_hash"]), "checkpoint_best.pt")
        if not os.path.exists(checkpoint):
            missing.append(config)
            continue
        found[config] = (run, result, checkpoint)
    common = {"data_bin": data.data_bin, "beam": s.beam, "lenpen": s.lenpen, "src": data.src, "tgt": data.tgt,
              "detok": s.bleu == "detok", "references": data.references}
    decode_jobs = []
    for config, (run, result, checkpoint) in found.items():
        for overrides in settings_of(config):
            name = f"{run.name}.{result['config_hash']}.{label_of(overrides).replace('=', '').replace(',', '_')}"
            decode_jobs.append({**common, "config": config, "checkpoint": checkpoint, "overrides": overrides,
                                "cache": os.path.join(cache, name.replace(' ', '-') + ".json")})
    log(f"decoding {len(decode_jobs)} settings of {len(found)} runs (missing: {', '.join(missing) or 'none'})")
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        points = list(pool.map(decode_point, decode_jobs))
    rows, energy_jobs = [], []
    for config in found:
        point = chosen(config, points)
        if point is None:
            continue
        run, result, checkpoint = found[config]
        name = f"{run.name}.{result['config_hash']}.{label_of(point['overrides'])}".replace(" ", "-")
        energy_jobs.append({**common, "checkpoint": checkpoint, "overrides": point["overrides"],
                            "sentences": sentences, "cache": os.path.join(cache, f"energy.{sentences}.{name}.json")})
        rows.append({"config": config, "run": run.name, "point": point,
                     "what": R.TECHNIQUE_CONFIGS.get(config, (config, "no technique", ()))[1]})
    log(f"counting decoding energy of {len(energy_jobs)} rows ({sentences} test sentences each, batch 1)")
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for row, energy in zip(rows, pool.map(energy_row, energy_jobs)):
            row["energy"] = energy
    return {"points": points, "rows": rows, "missing": missing, "energy_sentences": sentences, "beam": s.beam,
            "energy_table": ENERGY_TABLE, "setting": s.as_dict()}


# ---- report ----------------------------------------------------------------------------------------------------------

def base_of(config: str) -> str:
    return config.split("+")[0]


@renderer("techniques")
def markdown(rec: Dict) -> str:
    rows = {r["config"]: r for r in rec["rows"]}
    lines = ["# The survey's techniques on vanilla and E-ATT (small scale)", "",
             f"Made by `{rec['command']}` on {rec['date']} (commit {rec['git_commit']}); machine: the JSON file "
             "beside this one. **Reduced scale**: Multi30k En-De, `transformer_eatt_small` (d 256, 3+3 layers), "
             f"{rec['setting']['max_update']} updates on a 2-core CPU, seed 1, E-ATT recipe `{RECIPE}` (pre-norm "
             "blocks) for every run, vanilla included; trained by `fairseq-eatt-experiment techniques --scale "
             "small`. Its numbers show trends at a small budget, not the paper's scale.", "",
             f"Decoding: fairseq's SequenceGenerator in-process, beam {rec['beam']}, sacreBLEU on detokenized output "
             "(as fairseq-generate with `--post-process subword_nmt --tokenizer moses`). Settings fixed before test "
             f"BLEU: pruning at its training ratio {TRAINED_KEEP_RATIO}; early exit at the lowest threshold whose dev "
             f"BLEU is within {EXIT_DEV_TOLERANCE} of full depth. Energy: the first {rec['energy_sentences']} test "
             f"sentences decoded at batch 1 under the operation counter, `{rec['energy_table']}` costs, arithmetic "
             "only and with weights and caches in DRAM (weights at their stored precision); declared = executed for "
             "every attention call (last column).", ""]
    if rec.get("missing"):
        lines += [f"Not run yet: {', '.join(rec['missing'])}.", ""]
    lines += ["## Comparison rows", "",
              "| run | technique (setting) | params | stored MiB | dev BLEU | test BLEU | vs base (test) | energy "
              "µJ/sent. (arith.) | with DRAM | multiplications / sent. | attention mult. / sent. | decoding s (test) | "
              "declared = executed |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for config, row in rows.items():
        p, e = row["point"], row["energy"]
        base = rows.get(base_of(config))
        # one seed each and no kept hypotheses: no significance test is possible
        delta = f"{p['test']['bleu'] - base['point']['test']['bleu']:+.2f}{UNTESTED}" if base else "n/a"
        what = row["what"] if config in R.TECHNIQUE_CONFIGS else "none"
        setting = p["label"]
        extra = []
        if p["test"].get("kept_ratio") is not None and p["test"]["kept_ratio"] < 1:
            extra.append(f"{p['test']['kept_ratio']:.0%} of source tokens kept")
        if p["test"].get("mean_exit_depth") is not None and config.endswith("+exit"):
            extra.append(f"mean exit depth {p['test']['mean_exit_depth']:.2f}")
        lines.append(
            f"| `{row['run']}` | {what} ({setting}{'; ' + '; '.join(extra) if extra else ''}) | {e['params']:,} | "
            f"{e['stored_bytes'] / 2**20:.1f} | {p['dev']['bleu']:.2f} | {p['test']['bleu']:.2f} | {delta} | "
            f"{e['energy_uj_per_sentence']['arithmetic']:,.0f} | {e['energy_uj_per_sentence']['dram']:,.0f} | "
            f"{e['mul_per_sentence']:,.0f} | {e['attention_mul_per_sentence']:,.0f} | {p['test']['seconds']:.0f} | "
            f"{'yes' if e['declared_equals_executed'] else 'NO'} |")
    lines += ["", LEGEND, "", "Decoding seconds: 1,000 test sentences, one thread, two decodes side by side on the 2 "
              "cores "
              "(noisy; the energy columns are counts).", ""]
    for title, prefix, key, fmt in (
            ("Pruning: BLEU against the share of source tokens kept", "prune", "kept_ratio", "{:.2f}"),
            ("Early exit: BLEU against the mean exit depth", "exit", "mean_exit_depth", "{:.2f}")):
        lines += [f"## {title}", "", "| run | setting | dev BLEU | test BLEU | test: " + key.replace("_", " ")
                  + " | decoding s (test) |", "|---|---|---|---|---|---|"]
        for p in rec["points"]:
            wanted = (p["config"].endswith("+" + prefix) or
                      (prefix == "prune" and p["config"] in ("vanilla", "eatt")))
            if not wanted:
                continue
            value = p["test"].get(key)
            shown = fmt.format(value) if value is not None else "1.00" if key == "kept_ratio" else "n/a"
            lines.append(f"| {p['config']} | {p['label']} | {p['dev']['bleu']:.2f} | {p['test']['bleu']:.2f} | "
                         f"{shown} | {p['test']['seconds']:.0f} |")
        if rec.get("figures", {}).get(prefix):
            lines += ["", f"![{title}]({rec['figures'][prefix]})"]
        lines.append("")
    lines += ["## What it shows", ""] + [f"- {line}" for line in findings(rec)] + [""]
    return "\n".join(lines)


def findings(rec: Dict) -> List[str]:
    """Plain statements from the rows: each technique against the 2-BLEU target on its base."""
    rows = {r["config"]: r for r in rec["rows"]}
    out = []
    for config, row in rows.items():
        base = rows.get(base_of(config))
        if config not in R.TECHNIQUE_CONFIGS or base is None:
            continue
        delta = row["point"]["test"]["bleu"] - base["point"]["test"]["bleu"]
        e, eb = row["energy"]["energy_uj_per_sentence"], base["energy"]["energy_uj_per_sentence"]
        verdict = "within" if delta >= -2 else "NOT within"
        out.append(f"`{config}` ({row['point']['label']}): {delta:+.2f} test BLEU against `{base_of(config)}` (one "
                   f"seed, untested: not a finding), {verdict} the 2-BLEU target; decoding energy "
                   f"{e['arithmetic'] / eb['arithmetic']:.0%} "
                   f"(arithmetic) and {e['dram'] / eb['dram']:.0%} (with DRAM) of its base's.")
    if "eatt+ternary" in rows and "vanilla" in rows:
        e, v = rows["eatt+ternary"]["energy"], rows["vanilla"]["energy"]
        out.append(f"E-ATT with ternary weights keeps {e['attention_mul_per_sentence']:,.0f} attention "
                   f"multiplications per sentence "
                   f"({e['attention_mul_per_sentence'] / v['attention_mul_per_sentence']:.1%}"
                   f" of vanilla's): the softmax-weighted sums of values and one scale per output of the value and "
                   f"output projections; Q and K are selections, the L1 scores additions. The whole model keeps "
                   f"{e['mul_per_sentence'] / v['mul_per_sentence']:.1%} of vanilla's multiplications (the output "
                   f"layer over the vocabulary stays in float).")
    return out


def plot(rec: Dict, out_prefix: str) -> Dict[str, str]:
    from ..plots import finish, pyplot

    plt = pyplot()
    figures = {}
    groups = {"prune": ("kept_ratio", "share of source tokens kept (test)"),
              "exit": ("mean_exit_depth", "mean exit depth (decoder layers, test)")}
    for prefix, (key, xlabel) in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for config in ["vanilla", "eatt", *R.TECHNIQUE_CONFIGS]:
            if not (config.endswith("+" + prefix) or (prefix == "prune" and config in ("vanilla", "eatt"))):
                continue
            pts = [p for p in rec["points"] if p["config"] == config]
            xy = sorted(((p["test"].get(key) if p["test"].get(key) is not None else 1.0), p["test"]["bleu"])
                        for p in pts)
            if len(xy) < 2:
                continue
            label = config if config.endswith(prefix) else f"{config} (pruned at inference only)"
            ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
            drawn = True
        if drawn:
            path = f"{out_prefix}_{prefix}.png"
            finish(fig, ax, xlabel, "test BLEU", f"{prefix}: BLEU trade-off (Multi30k, small scale)", path)
            figures[prefix] = os.path.basename(path)
        else:
            plt.close(fig)
    return figures
