"""Cosine fits recover known parameters; the Fourier helpers obey their identities."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses.cosine_fit import (
    fit_cosines,
    fit_harmonics,
    fit_joint_inputs,
    refine_free_frequency,
)
from analyses.fourier import fourier_basis, power_spectrum

P = 113
X = torch.arange(P, dtype=torch.float64)


def cosine(k, s, phi, o, p=P):
    return s * torch.cos(2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p + phi) + o


def circ(a, b):
    return abs(math.remainder(a - b, 2 * math.pi))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 56), s=st.floats(0.1, 3.0), phi=st.floats(-math.pi, math.pi),
       o=st.floats(-1.0, 1.0), noise=st.floats(0.0, 0.1), seed=st.integers(0, 10_000))
def test_closed_form_recovers_cosine_with_noise(k, s, phi, o, noise, seed):
    gen = torch.Generator().manual_seed(seed)
    w = cosine(k, s, phi, o) + noise * s * torch.randn(P, generator=gen, dtype=torch.float64)
    fit = fit_cosines(w[None].float())
    # estimator spread ~ noise * s * sqrt(2 / p); allow 6 of those plus float32 rounding
    tol = 6 * noise * s * math.sqrt(2 / P) + 1e-5 * (s + abs(o))
    assert int(fit.k[0]) == k
    assert abs(float(fit.scale[0]) - s) <= tol
    assert abs(float(fit.offset[0]) - o) <= tol
    assert circ(float(fit.phase[0]), phi) <= tol / s + 1e-5
    assert float(fit.r2[0]) >= 1 - 4 * noise**2 - 1e-5


def test_r2_is_share_of_variance_and_fixed_k():
    w = (cosine(5, 1.0, 0.3, 0.0) + cosine(9, 0.5, 1.0, 0.2))[None].float()
    fit = fit_cosines(w)
    assert int(fit.k[0]) == 5
    assert float(fit.r2[0]) == pytest.approx(1.0 / (1.0 + 0.25), abs=1e-5)
    fixed = fit_cosines(w, torch.tensor([9]))
    assert float(fixed.scale[0]) == pytest.approx(0.5, abs=1e-5)
    assert float(fixed.r2[0]) == pytest.approx(0.25 / 1.25, abs=1e-5)
    with pytest.raises(ValueError, match="k must hold 1 integer frequencies in \\[1, 56\\]"):
        fit_cosines(w, torch.tensor([57]))
    with pytest.raises(ValueError, match="w must be a 2-D float tensor"):
        fit_cosines(torch.zeros(P))
    with pytest.raises(ValueError, match="got dtype torch.float32"):
        fit_cosines(w, torch.tensor([2.7]))
    with pytest.raises(ValueError, match="k must hold 1 integer frequencies in \\[1, 56\\]"):
        fit_harmonics(w, torch.tensor([0]))
    with pytest.raises(ValueError, match="k must hold 1 integer"):
        fit_harmonics(w, torch.tensor([3, 4]))


def test_free_frequency_lands_on_integer_and_finds_non_integer():
    w = torch.stack([cosine(17, 0.8, 1.2, 0.1), cosine(17.3, 0.8, 1.2, 0.1)]).float()
    fit = refine_free_frequency(w, fit_cosines(w))
    assert float(fit.freq[0]) == pytest.approx(17.0, abs=1e-4)
    assert float(fit.freq[1]) == pytest.approx(17.3, abs=1e-3)  # not hard-wired to integers
    assert float(fit.r2[1]) > 0.999
    assert float(fit.scale[1]) == pytest.approx(0.8, abs=1e-3)


def test_joint_fit_picks_the_least_squares_frequency():
    # a: strong k=3 plus weaker k=5; b: only k=5. With a shared scale the squared error is
    # smallest at k=5 (|F_a,5| + |F_b,5| beats |F_a,3| + |F_b,3|), though k=3 has the most power.
    wa = (cosine(3, 1.0, 0.0, 0.0) + cosine(5, 0.6, 0.0, 0.0))[None].float()
    wb = cosine(5, 0.6, 1.0, 0.0)[None].float()
    j = fit_joint_inputs(wa, wb)
    assert int(j.k[0]) == 5

    fa, fb = j.as_fits()
    best = float(((wa - fa.values()) ** 2).sum() + ((wb - fb.values()) ** 2).sum())
    s3 = (float(fit_cosines(wa, torch.tensor([3])).scale[0])
          + float(fit_cosines(wb, torch.tensor([3])).scale[0])) / 2
    fa3 = fit_cosines(wa, torch.tensor([3]))
    fb3 = fit_cosines(wb, torch.tensor([3]))
    fa3.scale[:] = s3
    fb3.scale[:] = s3
    at3 = float(((wa - fa3.values()) ** 2).sum() + ((wb - fb3.values()) ** 2).sum())
    assert best < at3


def test_joint_fit_shares_k_scale_offset():
    wa = cosine(11, 0.6, 0.4, -0.05)[None].float()
    wb = cosine(11, 0.5, -2.0, -0.03)[None].float()
    j = fit_joint_inputs(wa, wb)
    assert int(j.k[0]) == 11
    assert float(j.scale[0]) == pytest.approx(0.55, abs=1e-5)
    assert float(j.offset[0]) == pytest.approx(-0.04, abs=1e-5)
    assert circ(float(j.phase_a[0]), 0.4) < 1e-5 and circ(float(j.phase_b[0]), -2.0) < 1e-5
    assert 0.9 < float(j.r2_a[0]) < 1.0


def test_harmonic_fit_recovers_both_terms():
    w = (cosine(30, 1.0, 0.5, 0.2) + cosine(60, 0.3, -1.0, 0.0))[None].float()  # 2k aliases to 53
    h = fit_harmonics(w, torch.tensor([30]), 2)
    assert h.scale[0].tolist() == pytest.approx([1.0, 0.3], abs=1e-5)
    assert circ(float(h.phase[0, 1]), -1.0) < 1e-5
    assert float(h.r2[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(fit_cosines(w).r2[0]) < 0.95


def test_fourier_basis_is_orthonormal_and_parseval_holds():
    for p in (7, 12, 113):
        basis, labels = fourier_basis(p)
        assert basis.shape == (p, p) and labels[0] == "const"
        torch.testing.assert_close(basis @ basis.T, torch.eye(p), atol=1e-5, rtol=0)
    w = torch.randn(3, P, dtype=torch.float64)
    ss = (w - w.mean(1, keepdim=True)).square().sum(1)
    torch.testing.assert_close(power_spectrum(w).sum(1) * 2 / P, ss)
    with pytest.raises(ValueError, match="p must be an integer >= 2"):
        fourier_basis(1)
