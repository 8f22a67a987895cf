"""A bad body is refused with one sentence that names the field and says what it must be,
whichever way in it came (REST handler, service, CLI)."""

from __future__ import annotations

import pytest

from milady_lab.api import decode, schema
from milady_lab.errors import InputError

CASES = [
    (schema.StartJobRequest, {"iterations": 0}, "iterations must be at least 1, got 0"),
    (schema.StartJobRequest, {"iterations": "x"}, "iterations must be an integer, got 'x'"),
    (schema.StartJobRequest, {"epochs": True}, "epochs must be a number, got True"),
    (schema.StartJobRequest, {"learningRate": 2}, "learningRate must be at most 1, got 2"),
    (schema.StartJobRequest, {"loraDropout": 1}, "loraDropout must be less than 1, got 1"),
    (schema.StartJobRequest, {"backend": "tpu"}, "backend must be one of cpu, cuda, mlx"),
    (schema.StartJobRequest, {"model": " "}, "model must be a non-blank string"),
    (schema.StartJobRequest, {"targetModules": []}, "targetModules must list at least 1"),
    (schema.StartJobRequest, {"targetModules": [""]}, "targetModules must not be empty"),
    (schema.StartJobRequest, {"nope": 1}, "unknown field(s) nope; expected datasetId,"),
    (schema.BuildDatasetRequest, {"startDate": "2024-13-01"}, "startDate must be a date as"),
    (schema.BuildDatasetRequest, {"source": []}, "source must list at least 1 value(s)"),
    (schema.BuildDatasetRequest, {"privacy": 3}, "privacy must be a JSON object, got 3"),
    (schema.BuildDatasetRequest, {"privacy": {"redact": "y"}}, "privacy.redact must be true"),
    (schema.BuildDatasetRequest, {"privacy": {"x": 1}}, "unknown privacy key(s) x"),
    (schema.ActivateRequest, {"providerModel": "a\x01"}, "providerModel must be a non-blank"),
    (schema.AutoPolicy, {"ollamaUrl": "http://example.com"}, "ollamaUrl must be an http://"),
    (schema.AgentTrainingConfigRequest, {"autoTrain": None}, "autoTrain must be true or false"),
]


@pytest.mark.parametrize(("kind", "body", "message"), CASES, ids=range(len(CASES)))
def test_a_bad_body_is_one_sentence_naming_the_field(kind, body, message) -> None:
    with pytest.raises(InputError) as refused:
        decode.body(body, kind)
    assert refused.value.message.startswith(message), refused.value.message
    assert refused.value.status == 400


def test_no_body_takes_every_default_and_a_good_one_is_its_struct() -> None:
    assert decode.body(None, schema.StartJobRequest) == schema.StartJobRequest()
    job = decode.body({"iterations": 5, "targetModules": "all-linear"}, schema.StartJobRequest)
    assert (job.iterations, job.target_modules) == (5, "all-linear")
    with pytest.raises(InputError, match="must be a JSON object"):
        decode.body([1, 2], schema.StartJobRequest)
