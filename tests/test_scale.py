"""Scale-out pieces that need no cluster: the `ray` config section, how replicas on one node
split its cores, and how requests are routed to replicas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError
from reasoner.scale.replicas import Router, core_binding, cores_for_slot, routing_key
from reasoner.scale.settings import RaySettings
from reasoner.types import ChatMessage, GenerationRequest, SamplingParams


def test_ray_section_validates_and_defaults() -> None:
    config = build_config(EvalConfig, {}, ["ray.address=auto", "ray.replicas=4"])
    assert config.ray is not None
    assert (config.ray.address, config.ray.replicas, config.ray.cpus_per_replica) == (
        "auto",
        4,
        1.0,
    )
    assert build_config(EvalConfig, {}, []).ray is None
    with pytest.raises(ConfigError, match=r"ray\.replicas: Input should be greater"):
        build_config(EvalConfig, {}, ["ray.replicas=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'ray\.replica'; valid keys here: address"):
        build_config(EvalConfig, {}, ["ray.replica=2"])
    with pytest.raises(ValidationError):
        RaySettings(verifier_chunk=0)


@pytest.mark.parametrize(
    ("cores", "slots", "expected"),
    [
        ([0, 1], 2, [[0], [1]]),
        ([0, 1, 2, 3], 2, [[0, 1], [2, 3]]),
        ([0, 1, 2, 3, 4], 2, [[0, 1], [2, 3, 4]]),
        ([4, 5, 6, 7], 1, [[4, 5, 6, 7]]),
        ([0, 1], 3, [[0], [1], [0]]),  # more replicas than cores: shared round-robin
    ],
)
def test_replicas_on_a_node_split_its_cores(
    cores: list[int], slots: int, expected: list[list[int]]
) -> None:
    shares = [cores_for_slot(cores, slot, slots) for slot in range(slots)]
    assert shares == expected


def test_core_binding_syntax() -> None:
    assert core_binding([3]) == "3"
    assert core_binding([2, 0, 1]) == "0-2"
    assert core_binding([0, 2, 5]) == "0,2,5"


def _chat(question: str, answer_so_far: str | None = None) -> GenerationRequest:
    messages = [ChatMessage("system", "Think."), ChatMessage("user", question)]
    if answer_so_far is not None:
        messages.append(ChatMessage("assistant", answer_so_far))
    return GenerationRequest(messages=tuple(messages), sampling=SamplingParams())


def test_a_problems_requests_stick_to_one_replica_and_problems_spread() -> None:
    router = Router(2)
    first = [router.route(_chat(f"problem {i}")) for i in range(6)]
    assert sorted(first) == [0, 0, 0, 1, 1, 1]
    # later search steps of the same problems (a longer chat) go where their prompt is cached
    later = [router.route(_chat(f"problem {i}", "Step 1: ...")) for i in range(6)]
    assert later == first
    assert routing_key(_chat("q", "partial")) == routing_key(_chat("q")) == "q"
    prompt = GenerationRequest(prompt="x" * 600, sampling=SamplingParams())
    assert routing_key(prompt) == "x" * 512


def test_ray_verifier_keeps_a_judge_in_the_driver_and_sends_the_rest_with_their_timeout() -> None:
    from _scripted_generator import ScriptedGenerator

    from reasoner.scale.verifiers import RayVerifier, ray_verifier
    from reasoner.verifiers.choice import ChoiceVerifier
    from reasoner.verifiers.judge import LLMJudgeVerifier

    judge = LLMJudgeVerifier(ScriptedGenerator(lambda request, call: ["VERDICT: CORRECT"]))
    assert ray_verifier(judge, RaySettings()) is judge  # it holds the engine: never rebuilt
    choice = ChoiceVerifier(timeout_s=3.0)
    remote = ray_verifier(choice, RaySettings())
    assert isinstance(remote, RayVerifier)
    assert (remote.verifier_name, remote.options, remote.timeout_s) == (
        "choice",
        (("timeout_s", 3.0),),
        3.0,
    )
    assert ray_verifier(choice, RaySettings(local_verifiers=["choice"])) is choice
