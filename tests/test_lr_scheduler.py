import math

import pytest
import torch
from omegaconf import OmegaConf

import fairseq_eatt  # noqa: F401
from fairseq.optim import FairseqOptimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler
from fairseq_eatt.lr_scheduler.eatt_schedule import eatt_lr


def paper_formula(t, peak=1e-3, warmup=8000, plateau=20000):
    return peak * min(t / warmup, 1.0, math.sqrt(plateau / t))


@pytest.mark.parametrize("t", [1, 10, 4000, 7999, 8000, 12000, 20000, 20001, 50000, 150000])
def test_matches_the_papers_formula(t):
    assert eatt_lr(t, 1e-3, 8000, 20000) == pytest.approx(paper_formula(t), rel=1e-12)


class _SGD(FairseqOptimizer):
    def __init__(self):
        super().__init__(None)
        self._optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def build(**overrides):
    cfg = OmegaConf.create({"_name": "eatt", "warmup_updates": 8000, "plateau_updates": 20000, "lr": [1e-3],
                            **overrides})
    opt = _SGD()
    return build_lr_scheduler(cfg, opt), opt


def test_registered_scheduler_follows_the_formula_per_update():
    sched, opt = build()
    assert opt.get_lr() == pytest.approx(paper_formula(1))  # the first update is step t = 1, not lr = 0
    for done in (0, 100, 7999, 8000, 19999, 20000, 49999):
        sched.step_update(done)
        assert opt.get_lr() == pytest.approx(paper_formula(done + 1), rel=1e-12)


@pytest.mark.parametrize("overrides,match", [({"plateau_updates": 10}, "--plateau-updates"),
                                             ({"warmup_updates": -1}, "must be >= 0"),
                                             ({"lr": [1e-3, 5e-4]}, "single peak --lr")])
def test_bad_settings_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        build(**overrides)
