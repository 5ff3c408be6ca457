"""An LLM as the verifier: any Generator grades a candidate against the reference answer.

For answers no rule can check (proofs in prose, open-ended explanations). The judge's reply must
end in a parsable verdict; one that does not is an `error`, never a silent "incorrect".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams, Verdict
from reasoner.verifiers.base import Verifier

_VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(correct|incorrect)\b", re.IGNORECASE)


def parse_judgement(text: str) -> bool | None:
    """The last `VERDICT: CORRECT|INCORRECT` in the judge's reply; None when there is none."""
    matches = _VERDICT.findall(text)
    return None if not matches else matches[-1].lower() == "correct"


class LLMJudgeVerifier(Verifier):
    name = "judge"
    #: grades without a reference answer when it has none (a blinded problem)
    reads_gold = False
    needs_generator = True

    def __init__(
        self,
        generator: Generator,
        prompt: str | PromptTemplate = "judge",
        max_tokens: int = 256,
        timeout_s: float | None = None,  # the engine bounds time; kept for the contract
    ) -> None:
        self.timeout_s = timeout_s
        self.generator = generator
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        return self.verify_batch([(problem, completion)])[0]

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        """One engine call for the whole batch."""
        requests = [
            GenerationRequest(
                messages=self.prompt.render(
                    problem, reference=problem.answer or "(none given)", candidate=completion.text
                ),
                sampling=self.sampling,
            )
            for problem, completion in pairs
        ]
        try:
            replies = self.generator.generate(requests)
        except Exception as exc:  # the judge's engine failing is the verifier failing
            return [Verdict("error", 0.0, f"judge model failed: {exc}") for _ in pairs]
        return [self._verdict(reply[0] if reply else None) for reply in replies]

    @staticmethod
    def _verdict(reply: Completion | None) -> Verdict:
        text = reply.text if reply is not None else ""
        details: dict[str, Any] = {"judge_reply": text}
        if reply is not None:
            # the judge's tokens, so strategies that score with it can count what it cost
            details["usage"] = {
                "prompt_tokens": reply.prompt_tokens,
                "cached_prompt_tokens": reply.cached_prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            }
        judged = parse_judgement(text)
        if judged is None:
            return Verdict("error", 0.0, "the judge's reply has no VERDICT line", None, details)
        # the judge's reasoning is the feedback a refine step shows the model, not the verdict
        reason = " ".join(
            line.strip() for line in text.strip().splitlines() if not _VERDICT.search(line)
        )[:600]
        return Verdict("correct" if judged else "incorrect", float(judged), reason, None, details)
