"""Label-smoothed cross-entropy plus the auxiliary losses of attention modules (adaptive span's span penalty) and,
for a depth-adaptive decoder (``--early-exit``), the loss of every decoder layer's exit.

Early exit (Elbayad et al. 2020, uniform weights): the loss is the mean over decoder layers of the label-smoothed
cross-entropy of the shared output layer on each layer's state; ``nll_loss`` stays the last layer's, and each
earlier exit's is logged as ``exit{n}_nll_loss``.

Every attention module whose capabilities declare ``auxiliary_loss`` contributes auxiliary_loss() x sample_size
(a per-token penalty, like the summed cross-entropy) while training. Logged: ``aux_loss`` per token and each
module's ``auxiliary_metrics()`` (adaptive span: ``attn_span``, the mean span), averaged over modules.
"""
import math
from typing import Dict, List

import torch
from fairseq import metrics, utils
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
        net_output = model(**sample["net_input"])
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {"loss": loss.data, "nll_loss": nll_loss.data, "ntokens": sample["ntokens"],
                          "nsentences": sample["target"].size(0), "sample_size": sample_size}
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        if getattr(getattr(model, "args", None), "early_exit", False):
            loss = self._with_exit_losses(model, net_output, sample, reduce, loss, logging_output)
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

    def _with_exit_losses(self, model, net_output, sample, reduce, loss, logging_output):
        """The mean of every decoder layer's loss (the last layer's is ``loss``); logs each earlier exit's nll."""
        states = net_output[1]["inner_states"][1:-1]  # after each decoder layer but the last
        total = loss
        for depth, state in enumerate(states, start=1):
            logits = model.decoder.output_layer(model.decoder.exit_features(state))
            exit_loss, exit_nll = self.compute_loss(model, (logits, net_output[1]), sample, reduce=reduce)
            total = total + exit_loss
            logging_output[f"exit{depth}_nll_loss"] = exit_nll.data
        total = total / (len(states) + 1)
        logging_output["loss"] = total.data
        return total

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        exits = sorted({key for log in logging_outputs for key in log if key.startswith("exit")
                        and key.endswith("_nll_loss")})
        for key in exits:  # base 2, like fairseq's nll_loss
            value = sum(float(log.get(key, 0)) for log in logging_outputs)
            metrics.log_scalar(key, value / max(ntokens, 1) / math.log(2), ntokens, round=3)
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
