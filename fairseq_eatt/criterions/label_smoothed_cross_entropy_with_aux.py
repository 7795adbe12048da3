"""Label-smoothed cross-entropy plus the auxiliary losses of attention modules (adaptive span's span penalty).

Any module with an ``auxiliary_loss()`` method contributes auxiliary_loss() x sample_size (a per-token penalty,
like the summed cross-entropy) while training. Logged: ``aux_loss`` per token and, when there are adaptive-span
heads, ``attn_span`` (their mean span).
"""
import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

NAME = "label_smoothed_cross_entropy_with_aux"


@register_criterion(NAME, dataclass=LabelSmoothedCrossEntropyCriterionConfig)
class LabelSmoothedCrossEntropyWithAuxCriterion(LabelSmoothedCrossEntropyCriterion):
    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        modules = [m for m in model.modules() if hasattr(m, "auxiliary_loss")]
        if modules:
            aux = sum(m.auxiliary_loss() for m in modules) * sample_size
            if model.training:
                loss = loss + aux
            logging_output["aux_loss"] = aux.detach()
            spans = [m.spans() for m in modules if hasattr(m, "spans")]
            if spans:
                logging_output["attn_span"] = torch.cat(spans).mean().detach()
                logging_output["attn_span_count"] = 1
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if any("aux_loss" in log for log in logging_outputs) and sample_size > 0:
            aux = sum(float(log.get("aux_loss", 0)) for log in logging_outputs)
            metrics.log_scalar("aux_loss", aux / sample_size, sample_size, round=6)
        count = sum(float(log.get("attn_span_count", 0)) for log in logging_outputs)
        if count > 0:  # attn_span holds a sum of per-batch means, so that workers' outputs can be summed
            metrics.log_scalar("attn_span", sum(float(log.get("attn_span", 0)) for log in logging_outputs) / count,
                               count, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # every value is a sum (the spans' mean travels as a sum with a count): distributed workers' logging
        # outputs are summed by fairseq's fast path, which also works on CPUs (the gather path needs CUDA)
        return True
