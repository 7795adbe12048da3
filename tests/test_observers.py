"""The public hook on attention calls: each call's shape and the elements a reorder moves, reported by the module."""
import torch

from fairseq_eatt.attention import build_attention
from fairseq_eatt.attention.observers import CallShape, observe


class Log:
    def __init__(self):
        self.calls, self.reorders = [], []

    def call(self, module, shape):
        self.calls.append(shape)

    def reorder(self, module, elements):
        self.reorders.append(elements)


def test_full_passes_decoding_steps_and_reorders_are_reported():
    torch.manual_seed(0)
    module = build_attention("vanilla", 8, 2, "decoder_self").eval()
    log = Log()
    handle = observe(module, log)
    x = torch.randn(5, 3, 8)
    module(x, x, x)
    assert log.calls == [CallShape(rows=3, queries=5, keys=5, new_keys=None)]
    state = {}
    for step in range(2):
        module(x[step:step + 1], x[step:step + 1], x[step:step + 1], incremental_state=state)
    assert log.calls[1:] == [CallShape(3, 1, 1, 1), CallShape(3, 1, 2, 1)]
    module.reorder_incremental_state(state, torch.tensor([2, 0, 1]))
    assert log.reorders == [2 * (3 * 2 * 2 * 4)]  # keys and values: 3 rows x 2 heads x 2 steps x 4 features
    handle.remove()
    module(x, x, x)
    assert len(log.calls) == 3  # removed: no more reports


def test_cross_attention_shared_by_a_sentences_hypotheses_reports_sentences_and_stacked_queries():
    torch.manual_seed(0)
    module = build_attention("eatt", 8, 2, "decoder_cross").eval()
    module.set_beam_size(2)
    log = Log()
    observe(module, log)
    source = torch.randn(4, 1, 8).repeat_interleave(2, dim=1)  # one sentence, two hypotheses
    query = torch.randn(1, 2, 8)
    state = {}
    module(query, source, source, incremental_state=state, static_kv=True)
    module(query, source, source, incremental_state=state, static_kv=True)
    assert log.calls == [CallShape(rows=1, queries=2, keys=4, new_keys=4), CallShape(1, 2, 4, 0)]


def test_a_fixed_size_decoding_state_reports_no_keys():
    module = build_attention("performer", 8, 2, "decoder_self").eval()
    log = Log()
    observe(module, log)
    x = torch.randn(1, 2, 8)
    module(x, x, x, incremental_state={})
    assert log.calls == [CallShape(rows=2, queries=1, keys=None, new_keys=1)]
