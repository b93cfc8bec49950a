"""run.json and metrics.jsonl as the learner recovers them: sequence numbers are line numbers, torn lines dropped."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.runs.config import config_document
from services.learner.runs.records import RunRecord, RunStatus
from services.learner.runs.registry import new_run_id
from services.learner.wire import event_message, run_message
from tests.integration.learner.conftest import tiny_tandem

K = learner_pb2


def test_a_record_round_trips_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run_id = new_run_id()
    config = config_document(tiny_tandem(steps=3))
    record = RunRecord(run_id, tmp_path / run_id, config, created_at=1_800_000_000.5)
    record.set_status(RunStatus.RUNNING)
    line = {"kind": "train", "step": 1, "round": 0, "metrics": {"train/reward": 0.5}, "message": "tandem", "time": 1.0}
    with (record.dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.write('{"kind": "eval", "step": 1, "ro')  # the learner was killed mid-write

    loaded = RunRecord.load(record.dir)
    assert (loaded.run_id, loaded.status, loaded.config) == (run_id, RunStatus.RUNNING, config)
    assert run_message(loaded).config == tiny_tandem(steps=3)
    messages = [event_message(run_id, i + 1, e) for i, e in enumerate(loaded.events)]
    assert [(m.sequence, m.kind, m.state) for m in messages] == [
        (1, K.RUN_EVENT_KIND_STATE, K.RUN_STATE_RUNNING),
        (2, K.RUN_EVENT_KIND_TRAIN_STEP, K.RUN_STATE_UNSPECIFIED),
    ]
    assert (loaded.step, loaded.metrics) == (1, {"train/reward": 0.5})
    loaded.set_status(RunStatus.SUCCEEDED, "")
    lines = (record.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["message"] for x in lines] == ["running", "tandem", "succeeded"]
    assert event_message(run_id, 3, loaded.events[-1]).state == K.RUN_STATE_SUCCEEDED
    message = run_message(RunRecord.load(record.dir))
    assert message.state == K.RUN_STATE_SUCCEEDED and message.created_at.ToNanoseconds() == 1_800_000_000_500_000_000
