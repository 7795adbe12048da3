"""Translate with a model exported by ``fairseq-eatt-export``, on ONNX Runtime, without fairseq or torch.

    python ort_translate.py EXPORT_DIR [--beam 5] [--lenpen 1] [--max-len-a 0] [--max-len-b 200]
                            [--batch-size 16] [--pretokenized] < source.txt > translations.txt

Needs numpy and onnxruntime; sacremoses and subword-nmt when the export names a Moses tokenizer and BPE codes
(``--pretokenized``: the input is already tokenized and split into subwords, the output keeps them).

Beam search follows fairseq's ``SequenceGenerator``: the first step starts from </s>; candidates are the best 2 x beam
continuations; a hypothesis ending in </s> among the best ``beam`` candidates is finished with its score divided by
its length (with </s>) to the power ``lenpen``; a sentence is done when it has ``beam`` finished hypotheses; padding is
never generated, </s> not at the first step, and at ``max_len_a * source length + max_len_b`` </s> is forced.
This file is copied into every export directory, so it runs where the export is deployed.
"""
import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's dictionary: bos, pad, eos, unk first, in this order


class Dictionary:
    """A fairseq ``dict.*.txt``: the four special symbols, then one ``symbol count`` line per symbol in order."""

    def __init__(self, path: str):
        self.symbols = list(SPECIALS)
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if line.endswith(" #fairseq:overwrite"):
                    line = line[: -len(" #fairseq:overwrite")]
                symbol, _, count = line.rpartition(" ")
                if not symbol or not count.lstrip("-").isdigit():
                    raise ValueError(f"{path}:{number}: expected 'symbol count', got {line!r}")
                self.symbols.append(symbol)
        self.index = {}
        for i, symbol in enumerate(self.symbols):
            self.index.setdefault(symbol, i)
        self.bos, self.pad, self.eos, self.unk = 0, 1, 2, 3

    def encode(self, words: Sequence[str]) -> List[int]:
        return [self.index.get(w, self.unk) for w in words] + [self.eos]

    def decode(self, ids: Sequence[int]) -> str:
        """Symbols joined by spaces; <s>, <pad> and </s> left out, as fairseq's Dictionary.string does."""
        return " ".join(self.symbols[i] for i in ids if i not in (self.bos, self.pad, self.eos))


def postprocessor(lang: Optional[str] = None, bpe: bool = True) -> Callable[[str], str]:
    """Hypothesis -> text, as fairseq-generate's ``--post-process subword_nmt --tokenizer moses``: subword-nmt's
    "@@ " joins undone (``bpe``), then Moses detokenization in ``lang`` (None: the text stays tokenized). The
    plugin's one copy of this, here because this file also runs beside an export, without the plugin."""
    detokenize = None
    if lang is not None:
        from sacremoses import MosesDetokenizer

        moses = MosesDetokenizer(lang=lang)
        detokenize = moses.detokenize

    def postprocess(line: str) -> str:
        if bpe:
            line = (line + " ").replace("@@ ", "").rstrip()
        return detokenize(line.split()) if detokenize is not None else line

    return postprocess


class Preprocessing:
    """Moses tokenization and subword-nmt BPE on the way in, their inverses on the way out, as the export names."""

    def __init__(self, export_dir: str, config: Dict, pretokenized: bool):
        self.tokenize = None
        self.bpe = None
        moses = not pretokenized and config.get("tokenizer") == "moses"
        self.target = postprocessor(config["target_lang"] if moses else None,  # hypothesis -> text
                                    bpe=not pretokenized and bool(config.get("bpe_codes")))
        if pretokenized:
            return
        if moses:
            from sacremoses import MosesPunctNormalizer, MosesTokenizer

            normalizer = MosesPunctNormalizer(lang=config["source_lang"])
            tokenizer = MosesTokenizer(lang=config["source_lang"])
            self.tokenize = lambda line: tokenizer.tokenize(normalizer.normalize(line), escape=False,
                                                            return_str=True)
        if config.get("bpe_codes"):
            from subword_nmt.apply_bpe import BPE

            with open(os.path.join(export_dir, config["bpe_codes"]), encoding="utf-8") as codes:
                self.bpe = BPE(codes)

    def source(self, line: str) -> List[str]:
        line = line.strip()
        if self.tokenize is not None:
            line = self.tokenize(line)
        if self.bpe is not None:
            line = self.bpe.process_line(line)
        return line.split()


PRECISIONS = ("float32", "int8")


def top_k(flat: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first, ties to the lower index: a stable sort of the whole
    row would give the same, but a partition first sorts only the candidates (2 x beam out of beam x vocabulary)."""
    if k >= flat.size:
        return np.argsort(-flat, kind="stable")[:k]
    kth = flat[np.argpartition(-flat, k - 1)[:k]].min()
    candidates = np.nonzero(flat >= kth)[0]  # every value tied with the k-th too, in index order
    return candidates[np.argsort(-flat[candidates], kind="stable")][:k]


class Translator:
    def __init__(self, export_dir: str, threads: Optional[int] = None, precision: str = "float32"):
        """``precision``: float32 (the exported graphs) or int8 (their dynamically quantized copies, int8/*.onnx,
        which fairseq-eatt-export writes beside them)."""
        import onnxruntime as ort

        with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
            self.config = json.load(handle)
        if precision not in PRECISIONS:
            raise ValueError(f"--precision {precision}: valid values are {', '.join(PRECISIONS)}")
        if precision == "int8" and not self.config.get("int8_files"):
            raise ValueError(f"--precision int8: {export_dir} has no int8 graphs (export it again with this version "
                             f"of fairseq-eatt-export)")
        folder = os.path.join(export_dir, "int8") if precision == "int8" else export_dir
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1

        def session(name: str):
            return ort.InferenceSession(os.path.join(folder, name), options, providers=["CPUExecutionProvider"])

        self.encoder, self.first, self.step = (session("encoder.onnx"), session("decoder_first.onnx"),
                                               session("decoder_step.onnx"))
        self.src_dict = Dictionary(os.path.join(export_dir, self.config["source_dict"]))
        self.tgt_dict = Dictionary(os.path.join(export_dir, self.config["target_dict"]))
        self.follows = [item["follows_hypotheses"] for item in self.config["state"]]
        self.max_source_positions = self.config["max_source_positions"]
        self.max_target_positions = self.config["max_target_positions"]

    @staticmethod
    def _run(session, values: Dict[str, np.ndarray]) -> List[np.ndarray]:
        # traced graphs drop the inputs they do not read (e.g. the encoder output once cross-attention is cached)
        return session.run(None, {i.name: values[i.name] for i in session.get_inputs()})

    def source_ids(self, words: Sequence[str], line_number: int) -> List[int]:
        ids = self.src_dict.encode(words)
        if len(ids) > self.max_source_positions:
            raise ValueError(f"input line {line_number}: {len(ids)} tokens with </s>, more than the model's "
                             f"--max-source-positions {self.max_source_positions}")
        return ids

    def translate_ids(self, sources: Sequence[List[int]], beam: int = 5, lenpen: float = 1.0,
                      max_len_a: float = 0.0, max_len_b: int = 200) -> List[List[Tuple[List[int], float]]]:
        """Beam search over a batch of source id lists: per sentence, its finished hypotheses (tokens without
        </s>, score) best first."""
        if beam < 1:
            raise ValueError(f"--beam must be at least 1, got {beam}")
        d = self.tgt_dict
        bsz, width = len(sources), max(len(s) for s in sources)
        src = np.full((bsz, width), self.src_dict.pad, dtype=np.int64)
        for i, ids in enumerate(sources):
            src[i, width - len(ids):] = ids  # left padding, as fairseq
        encoder_out, padding_mask = self._run(self.encoder, {"src_tokens": src})
        max_len = min(int(max_len_a * width + max_len_b), self.max_target_positions - 1)  # fairseq: padded width
        # step 0: one row per sentence; then beam rows per sentence
        prefix = np.full((bsz, 1), d.eos, dtype=np.int64)
        log_probs, *state = self._run(self.first, {"prev_output_tokens": prefix, "encoder_out": encoder_out,
                                                   "encoder_padding_mask": padding_mask})
        rows = np.repeat(np.arange(bsz), beam)
        encoder_out, padding_mask = encoder_out[:, rows], padding_mask[rows]
        state = [s[rows] if follows else s for s, follows in zip(state, self.follows)]
        log_probs = log_probs[rows]
        scores = np.zeros(bsz * beam, dtype=np.float32)  # float32 sums, as fairseq's, so near-ties break alike
        tokens = np.full((bsz * beam, 1), d.eos, dtype=np.int64)
        sentence_of = rows.copy()  # the sentence of each active row
        finished: List[List[Tuple[List[int], float]]] = [[] for _ in range(bsz)]
        for step in range(max_len + 1):
            lp = log_probs.astype(np.float32)
            lp[np.isnan(lp)] = -np.inf
            lp[:, d.pad] = -np.inf
            if step >= max_len:  # the last step: </s> only
                eos_column = lp[:, d.eos].copy()
                lp[:] = -np.inf
                lp[:, d.eos] = eos_column
            if step < 1:  # fairseq's min_len 1: no empty translation
                lp[:, d.eos] = -np.inf
            vocab = lp.shape[1]
            active = sorted(set(sentence_of.tolist()), key=sentence_of.tolist().index)
            next_rows, next_tokens, next_scores, next_sentences = [], [], [], []
            for sent in active:
                own = np.nonzero(sentence_of == sent)[0]
                cand = lp[own[:1]] if step == 0 else lp[own] + scores[own][:, None]
                flat = cand.reshape(-1)
                k = min(2 * beam, flat.size - 1) if flat.size > 1 else 1
                best = top_k(flat, k)
                kept = 0
                for rank, index in enumerate(best):
                    score = flat[index]
                    if score == -np.inf:
                        break
                    row, token = own[index // vocab], int(index % vocab)
                    if token == d.eos:
                        if rank < beam and len(finished[sent]) < beam:
                            length = step + 1
                            normalized = np.float32(score) / np.float32(length ** lenpen)
                            finished[sent].append((tokens[row, 1:].tolist(), float(normalized)))
                        continue
                    if kept < beam:
                        next_rows.append(row)
                        next_tokens.append(token)
                        next_scores.append(score)
                        next_sentences.append(sent)
                        kept += 1
            done = {s for s in range(bsz) if len(finished[s]) >= beam}
            keep = [i for i, s in enumerate(next_sentences) if s not in done]
            if not keep or step >= max_len:
                break
            order = np.array([next_rows[i] for i in keep], dtype=np.int64)
            tokens = np.concatenate([tokens[order], np.array([[next_tokens[i]] for i in keep], dtype=np.int64)], 1)
            scores = np.array([next_scores[i] for i in keep], dtype=np.float32)
            sentence_of = np.array([next_sentences[i] for i in keep], dtype=np.int64)
            state = [s[order] if follows else s for s, follows in zip(state, self.follows)]
            encoder_out, padding_mask = encoder_out[:, order], padding_mask[order]
            values = {"prev_output_tokens": tokens, "encoder_out": encoder_out, "encoder_padding_mask": padding_mask}
            values.update({f"state_in_{i}": s for i, s in enumerate(state)})
            log_probs, *state = self._run(self.step, values)
        return [sorted(hyps, key=lambda h: -h[1]) for hyps in finished]


def main(argv=None):
    p = argparse.ArgumentParser(prog="ort_translate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", help="a directory written by fairseq-eatt-export")
    p.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    p.add_argument("--lenpen", type=float, default=1.0, help="length penalty, as fairseq-generate's --lenpen")
    p.add_argument("--max-len-a", type=float, default=0.0, help="maximum length a * source length + b")
    p.add_argument("--max-len-b", type=int, default=200, help="maximum length a * source length + b")
    p.add_argument("--batch-size", type=int, default=16, help="sentences decoded together")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32 (the exported graphs) or int8 (their int8-weight copies in int8/)")
    p.add_argument("--pretokenized", action="store_true",
                   help="the input is tokenized and split into subwords already; the output keeps them")
    p.add_argument("--input", default="-", help="source sentences, one per line (default: stdin)")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.export_dir, "export.json")):
        p.error(f"{args.export_dir}: no export.json; pass a directory written by fairseq-eatt-export")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        translator = Translator(args.export_dir, args.threads, args.precision)
    except ValueError as err:
        p.error(str(err))
    prep = Preprocessing(args.export_dir, translator.config, args.pretokenized)
    handle = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with handle:
        lines = handle.read().splitlines()
    out = []
    for start in range(0, len(lines), args.batch_size):
        batch = [translator.source_ids(prep.source(line), start + i + 1)
                 for i, line in enumerate(lines[start:start + args.batch_size])]
        for hyps in translator.translate_ids(batch, args.beam, args.lenpen, args.max_len_a, args.max_len_b):
            out.append(prep.target(translator.tgt_dict.decode(hyps[0][0])) if hyps else "")
    sys.stdout.write("".join(line + "\n" for line in out))


if __name__ == "__main__":
    main()
