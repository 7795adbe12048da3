"""Training and decoding settings of each task at the paper's scale and at the small CPU scale.

Paper scale (E-ATT paper, Sec. 4.2, and the authors' released code): Transformer-base, lr = 0.001 * min(t/8000, 1,
(20000/t)^0.5), En-Vi 50k updates x 4,096 tokens with dropout 0.3 and all embeddings shared, En-De 150k x 32,768
tokens and Zh-En 200k x 32,768 with dropout 0.1 and shared decoder input/output embeddings; beam 4 / 4 / 10 and
length penalty 1.5 / 0.6 / 1.5; the best checkpoint on the dev set.
32,768 tokens per update are 4,096 tokens x ``--update-freq 8`` on one GPU; with G GPUs fairseq multiplies by G, so
pass ``--update-freq`` 8/G through ``--train-args`` to keep the paper's batch.

Small scale: Multi30k En-De (shipped), the ``transformer_eatt_small`` model and the demo's budget (650 updates of
2,048 tokens, about 10 minutes on 2 CPU cores), so that every table can be rerun on a laptop. It shows trends
at a reduced scale; its numbers are not comparable to the paper's.
"""
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Tuple

PAPER_TASKS = ("iwslt15-en-vi", "wmt14-en-de", "wmt17-zh-en")
SMALL_TASK = "multi30k-en-de"
SCALES = ("paper", "small")


@dataclass(frozen=True)
class TaskSetting:
    task: str  # a corpus of fairseq_eatt.data.corpora
    scale: str
    arch: str
    bpe_merges: int
    max_tokens: int
    update_freq: int
    max_update: int
    lr: float
    warmup_updates: int
    plateau_updates: int
    dropout: float
    embeddings: str  # "all" (--share-all-embeddings) or "decoder" (--share-decoder-input-output-embed)
    beam: int
    lenpen: float
    bleu: str  # "detok": detokenized output vs raw references; "tokenized": tokenized vs tokenized (IWSLT)
    extra_train_args: Tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> Dict:
        return asdict(self)


def _paper(task: str, **kw) -> TaskSetting:
    base = dict(task=task, scale="paper", arch="transformer_eatt", bpe_merges=32000, max_tokens=4096, update_freq=1,
                lr=1e-3, warmup_updates=8000, plateau_updates=20000)
    base.update(kw)
    return TaskSetting(**base)


SETTINGS: Dict[Tuple[str, str], TaskSetting] = {
    ("iwslt15-en-vi", "paper"): _paper("iwslt15-en-vi", max_update=50000, dropout=0.3, embeddings="all", beam=4,
                                       lenpen=1.5, bleu="tokenized"),
    ("wmt14-en-de", "paper"): _paper("wmt14-en-de", update_freq=8, max_update=150000, dropout=0.1,
                                     embeddings="decoder", beam=4, lenpen=0.6, bleu="detok"),
    ("wmt17-zh-en", "paper"): _paper("wmt17-zh-en", update_freq=8, max_update=200000, dropout=0.1,
                                     embeddings="decoder", beam=10, lenpen=1.5, bleu="detok"),
    (SMALL_TASK, "small"): TaskSetting(
        task=SMALL_TASK, scale="small", arch="transformer_eatt_small", bpe_merges=8000, max_tokens=2048,
        update_freq=1, max_update=650, lr=1.5e-3, warmup_updates=250, plateau_updates=650, dropout=0.3,
        embeddings="all", beam=4, lenpen=1.0, bleu="detok"),
}


def tasks_of(scale: str) -> List[str]:
    return [task for task, s in SETTINGS if s == scale]


def setting(task: str, scale: str, **overrides) -> TaskSetting:
    """The setting of ``task`` at ``scale``, with fields replaced by ``overrides`` (None values are ignored)."""
    if scale not in SCALES:
        raise ValueError(f"--scale {scale!r}: valid scales are {', '.join(SCALES)}")
    if (task, scale) not in SETTINGS:
        raise ValueError(f"task {task!r} has no {scale}-scale setting; {scale}-scale tasks: "
                         f"{', '.join(tasks_of(scale))}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(SETTINGS[(task, scale)], **chosen)
