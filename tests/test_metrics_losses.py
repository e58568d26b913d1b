import math

import numpy as np
import pytest
import torch

from pulmo.errors import ConfigError
from pulmo.losses import build_classification_loss, class_balanced_weights, inverse_frequency_weights
from pulmo.metrics.icbhi import confusion_matrix, icbhi_breakdown, icbhi_scores


def test_icbhi_score_hand_computed():
    # 4 normal (3 right), 2 crackle (1 right), 1 wheeze (right), 1 both (called crackle: wrong class)
    y_true = [0, 0, 0, 0, 1, 1, 2, 3]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 1]
    s = icbhi_scores(y_true, y_pred)
    assert s["specificity"] == pytest.approx(3 / 4)
    assert s["sensitivity"] == pytest.approx(2 / 4)  # an abnormal cycle must get its exact class
    assert s["score"] == pytest.approx((3 / 4 + 2 / 4) / 2) and s["n"] == 8


def test_icbhi_edge_cases():
    assert icbhi_scores([0, 0], [0, 1])["specificity"] == 0.5
    assert math.isnan(icbhi_scores([0, 0], [0, 1])["sensitivity"])
    assert icbhi_scores([1, 2, 3], [1, 2, 3])["sensitivity"] == 1.0
    with pytest.raises(ValueError):
        icbhi_scores([0, 1], [0])


def test_confusion_and_breakdown():
    cm = confusion_matrix([0, 1, 1, 2], [0, 1, 0, 2], 4)
    assert cm.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    b = icbhi_breakdown([0, 1, 0, 1], [0, 1, 1, 0], ["A", "A", "B", "B"])
    assert b["A"]["score"] == 1.0 and b["B"]["score"] == 0.0


def test_class_balanced_weights_match_formula():
    counts, beta = [1111, 451, 227, 125], 0.999
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    expected = raw / raw.sum() * 4
    np.testing.assert_allclose(class_balanced_weights(counts, beta).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(class_balanced_weights(counts, 0.0).numpy(), np.ones(4), rtol=1e-6)  # beta=0: no re-weighting
    inv = 1 / np.array(counts)
    np.testing.assert_allclose(inverse_frequency_weights(counts).numpy(), inv / inv.sum() * 4, rtol=1e-6)
    # beta -> 1 approaches inverse frequency
    np.testing.assert_allclose(class_balanced_weights(counts, 0.999999).numpy(), inv / inv.sum() * 4, rtol=2e-3)


def test_loss_builder():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 0])
    ce = build_classification_loss("ce", [3, 1, 1, 1])(logits, y)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, y))
    cb = build_classification_loss("class_balanced", [3, 1, 1, 1], 0.9)
    torch.testing.assert_close(cb.weight, class_balanced_weights([3, 1, 1, 1], 0.9))
    with pytest.raises(ConfigError, match="unknown loss"):
        build_classification_loss("focal", [1, 1])
    with pytest.raises(ConfigError, match="at least one"):
        class_balanced_weights([3, 0], 0.9)
    with pytest.raises(ConfigError, match="beta"):
        class_balanced_weights([3, 1], 1.0)


def test_ccc_and_pearson_match_the_libraries_and_the_report_matches_scikit_learn():
    import torch
    from scipy.stats import pearsonr
    from sklearn.metrics import f1_score
    from torchmetrics.regression import ConcordanceCorrCoef

    from pulmo.metrics.classification import classification_report
    from pulmo.metrics.regression import ccc, pearson

    rng = np.random.default_rng(0)
    true = rng.uniform(6, 30, 200)
    pred = 0.8 * true + 3 + rng.normal(0, 2, 200)
    expected = float(ConcordanceCorrCoef()(torch.tensor(pred), torch.tensor(true)))
    assert ccc(pred, true) == pytest.approx(expected, abs=1e-3)  # torchmetrics uses 1/(N-1) moments, Lin's paper 1/N
    assert pearson(pred, true) == pytest.approx(pearsonr(pred, true)[0], abs=1e-9)
    y_true, y_pred = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_conditional_adversary_reverses_the_gradient_it_sends_back():
    from pulmo.losses.adversarial import ConditionalAdversary

    torch.manual_seed(0)
    emb = torch.randn(6, 5, requires_grad=True)
    labels, nuisance = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 1, 0, 2, 2])
    adv = ConditionalAdversary(5, 3, 3, lam=0.5)
    adv.loss(emb, labels, nuisance).backward()
    # reference: the same linear layer on [embedding, one-hot label], no reversal
    ref_emb = emb.detach().clone().requires_grad_(True)
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    ref = torch.nn.functional.cross_entropy(adv.linear(torch.cat([ref_emb, onehot], 1)), nuisance)
    ref.backward()
    assert torch.allclose(emb.grad, -0.5 * ref_emb.grad)  # the encoder is pushed the other way, scaled
    assert adv.linear.weight.grad is not None  # the adversary itself learns normally
