"""The promotion gate, ``detectors.retrain.evaluate.decide``, at its edges: the margin (just above,
just below, exactly at), a monitored class that loses more than ``class_tolerance`` while the mean
improves, and the metric choice (``map50`` / ``map50_95``) deciding differently on the same two
evaluations. No services, no model: the evaluations are built by hand.

Numbers at the edges are sums of powers of two, so ``production + margin`` is exact in floating
point and "exactly at the margin" really is exactly at it.
"""

from __future__ import annotations

import pytest

from detectors.retrain.config import PromotionConfig
from detectors.retrain.evaluate import Evaluation, decide

EPS = 2**-10  # ~0.001: well inside the 3-decimal rounding nobody would call "at the margin"


def evaluation(
    map50: float,
    map50_95: float | None = None,
    per_class: dict[str, tuple[float, float]] | None = None,
    *,
    data: str = "/data/ds",
    split: str = "val",
    version: str = "0123456789ab",
) -> Evaluation:
    """An evaluation as ``evaluate()`` returns it; ``per_class``: name -> (ap50, ap50_95)."""
    return Evaluation(
        weights=f"/models/{version}.pt",
        model="yolov5n",
        version=version,
        data=data,
        split=split,
        images=40,
        instances=120,
        map50=map50,
        map50_95=map50 / 2 if map50_95 is None else map50_95,
        precision=0.8,
        recall=0.7,
        ms_per_image=12.0,
        imgsz=320,
        per_class={
            name: {
                "ap50": ap50,
                "ap50_95": ap5095,
                "precision": 0.8,
                "recall": 0.7,
                "instances": 60,
            }
            for name, (ap50, ap5095) in (per_class or {}).items()
        },
    )


def pair(candidate: float, production: float, **kw) -> tuple[Evaluation, Evaluation]:
    """Candidate and production with the given map50; person AP50 equal (the class check passes)."""
    person = {"person": (0.75, 0.5)}
    return (
        evaluation(candidate, per_class=person, version="cccccccccccc", **kw),
        evaluation(production, per_class=person, version="pppppppppppp", **kw),
    )


# -- margin ----------------------------------------------------------------------------------------


def test_exactly_at_the_margin_is_promoted():
    cfg = PromotionConfig(margin=0.0625)
    cand, prod = pair(0.5625, 0.5)
    assert cand.map50 == prod.map50 + cfg.margin  # exact, not approximately
    d = decide(cand, prod, cfg)
    assert d.promote is True
    assert (d.metric, d.candidate, d.production, d.margin) == ("map50", 0.5625, 0.5, 0.0625)
    assert d.reasons[0].endswith("-> better"), d.reasons


def test_just_above_the_margin_is_promoted_just_below_is_not():
    cfg = PromotionConfig(margin=0.0625)
    above = decide(*pair(0.5625 + EPS, 0.5), cfg)
    below = decide(*pair(0.5625 - EPS, 0.5), cfg)
    assert above.promote is True
    assert below.promote is False
    assert below.reasons[0].endswith("not better by the margin"), below.reasons
    assert below.per_class["person"]["ok"] is True  # refused for the margin alone


@pytest.mark.parametrize(
    ("candidate", "promote"),
    [(0.711, True), (0.709, False), (0.70, False), (0.69, False)],
)
def test_default_margin_of_the_docs(candidate, promote):
    """docs/retraining.md: beat production by ``models.promotion.margin`` (0.01)."""
    cfg = PromotionConfig()
    assert cfg.margin == 0.01 and cfg.metric == "map50"
    assert decide(*pair(candidate, 0.70), cfg).promote is promote


def test_equal_scores_with_a_zero_margin_are_promoted_and_worse_never_is():
    cfg = PromotionConfig(margin=0.0)
    assert decide(*pair(0.5, 0.5), cfg).promote is True
    assert decide(*pair(0.5 - EPS, 0.5), cfg).promote is False


# -- monitored classes -----------------------------------------------------------------------------


def test_a_monitored_class_dropping_beyond_tolerance_blocks_a_better_mean():
    cfg = PromotionConfig(margin=0.01, class_tolerance=0.02, monitored_classes=["person"])
    cand = evaluation(0.80, per_class={"person": (0.60, 0.4), "car": (1.0, 0.7)})
    prod = evaluation(0.60, per_class={"person": (0.65, 0.4), "car": (0.55, 0.3)})
    d = decide(cand, prod, cfg)
    assert d.candidate - d.production >= 0.19  # the mean got much better ...
    assert d.promote is False  # ... and it is still refused
    assert d.reasons[0].endswith("-> better")
    assert d.per_class["person"] == {
        "candidate": 0.60,
        "production": 0.65,
        "drop": 0.05,
        "ok": False,
    }
    assert any(r.startswith("person:") and "worse by 0.050" in r for r in d.reasons), d.reasons
    assert "car" not in d.per_class  # not monitored: not checked


def test_class_tolerance_edges():
    cfg = PromotionConfig(margin=0.0, class_tolerance=0.0625, monitored_classes=["person"])

    def with_person(cand_ap: float) -> bool:
        cand = evaluation(0.75, per_class={"person": (cand_ap, 0.3)})
        prod = evaluation(0.5, per_class={"person": (0.5, 0.3)})
        return decide(cand, prod, cfg).promote

    assert with_person(0.5 - 0.0625) is True  # a drop of exactly the tolerance is allowed
    assert with_person(0.5 - 0.0625 + EPS) is True
    assert with_person(0.5 - 0.0625 - EPS) is False


def test_a_class_the_candidate_lost_entirely_counts_as_zero():
    cfg = PromotionConfig(monitored_classes=["person", "car"])
    cand = evaluation(0.9, per_class={"person": (0.9, 0.6)})  # no "car" AP at all
    prod = evaluation(0.5, per_class={"person": (0.5, 0.3), "car": (0.4, 0.2)})
    d = decide(cand, prod, cfg)
    assert d.promote is False
    assert d.per_class["car"]["candidate"] == 0.0 and d.per_class["car"]["ok"] is False
    assert d.per_class["person"]["ok"] is True


def test_a_monitored_class_absent_from_both_is_not_checked():
    cfg = PromotionConfig(monitored_classes=["person", "forklift"])
    d = decide(*pair(0.8, 0.6), cfg)
    assert d.promote is True
    assert "forklift" not in d.per_class
    assert any(r.startswith("forklift: not in the held-out labels") for r in d.reasons)


def test_every_monitored_class_is_checked():
    cfg = PromotionConfig(monitored_classes=["person", "car"], class_tolerance=0.02)
    cand = evaluation(0.9, per_class={"person": (0.9, 0.6), "car": (0.5, 0.3)})
    prod = evaluation(0.5, per_class={"person": (0.5, 0.3), "car": (0.6, 0.3)})
    d = decide(cand, prod, cfg)
    assert d.promote is False
    assert d.per_class["person"]["ok"] is True and d.per_class["car"]["ok"] is False


# -- metric choice ---------------------------------------------------------------------------------


def test_the_metric_choice_decides():
    """Better at IoU 0.5, worse over 0.5-0.95 (looser boxes): map50 promotes, map50_95 refuses;
    the per-class check follows the metric (AP50 vs AP50-95 of the class)."""
    person_c, person_p = (0.80, 0.40), (0.70, 0.50)
    cand = evaluation(0.80, 0.40, per_class={"person": person_c})
    prod = evaluation(0.70, 0.50, per_class={"person": person_p})

    by50 = decide(cand, prod, PromotionConfig(metric="map50"))
    assert by50.promote is True
    assert (by50.metric, by50.candidate, by50.production) == ("map50", 0.80, 0.70)
    assert by50.per_class["person"]["candidate"] == 0.80

    by5095 = decide(cand, prod, PromotionConfig(metric="map50_95"))
    assert by5095.promote is False
    assert (by5095.metric, by5095.candidate, by5095.production) == ("map50_95", 0.40, 0.50)
    assert by5095.per_class["person"] == {
        "candidate": 0.40,
        "production": 0.50,
        "drop": 0.1,
        "ok": False,
    }
    assert by5095.reasons[0].startswith("map50_95:")


def test_the_class_check_uses_the_chosen_metric():
    """Same means either way; only the person AP of the chosen metric drops beyond tolerance."""
    cand = evaluation(0.80, 0.60, per_class={"person": (0.80, 0.40)})
    prod = evaluation(0.70, 0.50, per_class={"person": (0.70, 0.50)})
    assert decide(cand, prod, PromotionConfig(metric="map50")).promote is True
    refused = decide(cand, prod, PromotionConfig(metric="map50_95"))
    assert refused.promote is False
    assert refused.reasons[0].endswith("-> better")  # the mean passed; the class did not
    assert refused.per_class["person"]["ok"] is False


def test_the_worse_metric_the_other_way_round():
    cand = evaluation(0.70, 0.50, per_class={"person": (0.70, 0.50)})
    prod = evaluation(0.80, 0.40, per_class={"person": (0.70, 0.40)})
    assert decide(cand, prod, PromotionConfig(metric="map50")).promote is False
    assert decide(cand, prod, PromotionConfig(metric="map50_95")).promote is True


# -- no production, different splits ---------------------------------------------------------------


def test_without_production_the_candidate_becomes_it():
    d = decide(evaluation(0.01), None, PromotionConfig(margin=0.5))
    assert d.promote is True and d.production is None
    assert "no production model yet" in d.reasons[0]


def test_evaluations_of_different_splits_are_not_compared():
    cand, prod = evaluation(0.9, split="val"), evaluation(0.5, split="test")
    with pytest.raises(ValueError, match="same split"):
        decide(cand, prod)
    with pytest.raises(ValueError, match="same split"):
        decide(evaluation(0.9, data="/a"), evaluation(0.5, data="/b"))
