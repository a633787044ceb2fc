"""GAGA's variance choice: one setting that fixes both the Gaussian the evaluator tests against and the sampler's start.

- "paper": the paper's scalar v_hat (per-molecule unbiased variance over all of a molecule's entries, averaged over
  molecules) in v_t = 1 - alpha_bar_t (1 - v_hat) for every block, test and start alike.
- "reference": QuJX/GAGA's code: its test uses the per-block mean per-molecule RMS (QM9: 1.380 / 0.086) in
  v_t = alpha_bar_t v + (1 - alpha_bar_t); its sampler starts every block at the pooled RMS over all columns (QM9:
  0.848, so v_550 = 0.926).
- "exact": per block, the unbiased variance in units of the estimator's own value on the model's (zero-mean
  projected) noise, so v_t is what the estimator measures on x_t; the start uses the same v_hat. A block that keeps
  its mean (gaga.features=kept) gets its per-column mean and variance instead, and the only choice that has them.

The start v_hat is per block in units of the model's noise (variance 1 per degree of freedom): the sampler draws
projected standard noise times sqrt(alpha_bar_t v_hat + 1 - alpha_bar_t) (closed_form.sample_reference_gaussian).
"""

from __future__ import annotations

from gaga.gaussianity.blocks import POSITIONS
from gaga.gaussianity.variance import POOLED, VarianceEstimate, estimate_variance, with_column_moments

VARIANCES = ("exact", "paper", "reference")


def choose_variance(
    blocks, offsets, choice: str, zero_com_blocks=(POSITIONS,), kept_blocks=()
) -> tuple[VarianceEstimate, dict]:
    """(test, start): the estimate the evaluator tests against and the start v_hat per block of `blocks`.

    `kept_blocks` keep their mean (gaga.features=kept): only "exact" describes them, by their per-column mean and
    variance over atoms (variance.with_column_moments); "paper" and "reference" are estimators of zero-meaned
    molecules and are refused.
    """
    if kept_blocks and choice != "exact":
        raise ValueError(
            f"gaga.variance={choice} describes zero-meaned features only; with gaga.features=kept use "
            "gaga.variance=exact (the features' per-column mean and variance)"
        )
    if choice == "exact":
        centred = {b: values for b, values in blocks.items() if b not in kept_blocks}
        test = estimate_variance(centred, offsets, "unbiased", True, zero_com_blocks)
        if kept_blocks:
            test = with_column_moments(test, {b: blocks[b] for b in kept_blocks})
        return test, {b: test.start_v_hat(b) for b in blocks}
    if choice == "paper":
        pooled = estimate_variance(blocks, offsets, "unbiased", False, zero_com_blocks)
        test = VarianceEstimate("unbiased", False, dict(pooled.data), {POOLED: 1.0})  # the paper's unit noise
        return test, {b: pooled.data[POOLED] for b in blocks}
    if choice == "reference":
        test = estimate_variance(blocks, offsets, "reference_rms", True, zero_com_blocks)
        start = estimate_variance(blocks, offsets, "reference_rms", False, zero_com_blocks).data[POOLED]
        return test, {b: start for b in blocks}
    raise ValueError(f"gaga.variance={choice!r}; use one of {VARIANCES}")
