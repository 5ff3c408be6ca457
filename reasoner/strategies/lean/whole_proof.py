"""`lean-whole-proof`: sample n complete proofs per problem and check each with the run's
verifier (the Lean verifier), DeepSeek-Prover style. Lean needs no gold answer, so the check
may pick the answer: the problem's verdict is the first accepted proof's, or the first
sample's when none is accepted. Every sample's verdict is kept, so the summary's pass@k is
the unbiased pass@k of the n samples.

The prompt is the benchmark's (`prompts/lean_proof`); one engine call for all problems, each
problem verified as soon as its samples are done.
"""

from __future__ import annotations

from typing import ClassVar

from reasoner.strategies.n_sample import NoOptions, NSampleStrategy, Pick, Samples


class LeanWholeProof(NSampleStrategy[NoOptions]):
    name: ClassVar[str] = "lean-whole-proof"
    default_temperature: ClassVar[float] = 0.7
    options_model = NoOptions

    def pick(self, samples: Samples, options: NoOptions) -> Pick:
        verdicts = samples.verdicts
        accepted = next((i for i, v in enumerate(verdicts) if v.is_correct), None)
        if accepted is None:
            return Pick(verdicts[0], None)
        return Pick(verdicts[accepted], samples.completions[accepted].text)
