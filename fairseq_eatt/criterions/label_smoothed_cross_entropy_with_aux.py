"""Label-smoothed cross-entropy plus the auxiliary losses of attention modules (adaptive span's span penalty).

Every attention module whose capabilities declare ``auxiliary_loss`` contributes auxiliary_loss() x sample_size
(a per-token penalty, like the summed cross-entropy) while training. Logged: ``aux_loss`` per token and each
module's ``auxiliary_metrics()`` (adaptive span: ``attn_span``, the mean span), averaged over modules.
"""
from typing import Dict, List

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from ..attention import AttentionBase

NAME = "label_smoothed_cross_entropy_with_aux"


@register_criterion(NAME, dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class LabelSmoothedCrossEntropyWithAuxCriterion(LabelSmoothedCrossEntropyCriterion):
    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        modules = [m for m in model.modules()
                   if isinstance(m, AttentionBase) and m.capabilities.auxiliary_loss]
        if modules:
            aux = sum(m.auxiliary_loss() for m in modules) * sample_size
            if model.training:
                loss = loss + aux
            logging_output["aux_loss"] = aux.detach()
            values: Dict[str, List[torch.Tensor]] = {}
            for m in modules:
                for name, value in m.auxiliary_metrics().items():
                    values.setdefault(name, []).append(value)
            for name, found in values.items():  # a sum with a count, so that workers' outputs can be summed
                logging_output[name] = torch.stack(found).mean().detach()
                logging_output[name + "_count"] = 1
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if any("aux_loss" in log for log in logging_outputs) and sample_size > 0:
            aux = sum(float(log.get("aux_loss", 0)) for log in logging_outputs)
            metrics.log_scalar("aux_loss", aux / sample_size, sample_size, round=6)
        names = {key[:-len("_count")] for log in logging_outputs for key in log if key.endswith("_count")
                 and key != "_count" and key[:-len("_count")] in log}
        for name in sorted(names):  # each holds a sum of per-batch means with its count
            count = sum(float(log.get(name + "_count", 0)) for log in logging_outputs)
            if count > 0:
                metrics.log_scalar(name, sum(float(log.get(name, 0)) for log in logging_outputs) / count, count,
                                   round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # every value is a sum (the spans' mean travels as a sum with a count): distributed workers' logging
        # outputs are summed by fairseq's fast path, which also works on CPUs (the gather path needs CUDA)
        return True
