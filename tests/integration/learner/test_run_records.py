"""run.json and metrics.jsonl as the learner recovers them: sequence numbers are line numbers, torn lines dropped."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.runs.registry import RunRecord, new_run_id
from tests.integration.learner.conftest import tiny_tandem

K = learner_pb2


def test_a_record_round_trips_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run_id = new_run_id()
    record = RunRecord(run_id, tmp_path / run_id, tiny_tandem(steps=3), created_at=1_800_000_000.5)
    record.set_state(K.RUN_STATE_RUNNING)
    line = {"kind": "train", "step": 1, "round": 0, "metrics": {"train/reward": 0.5}, "message": "tandem", "time": 1.0}
    with (record.dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.write('{"kind": "eval", "step": 1, "ro')  # the learner was killed mid-write

    loaded = RunRecord.load(record.dir)
    assert (loaded.run_id, loaded.state, loaded.config) == (run_id, K.RUN_STATE_RUNNING, tiny_tandem(steps=3))
    assert [(e.sequence, e.kind) for e in loaded.events] == [
        (1, K.RUN_EVENT_KIND_STATE),
        (2, K.RUN_EVENT_KIND_TRAIN_STEP),
    ]
    assert (loaded.step, loaded.metrics) == (1, {"train/reward": 0.5})
    loaded.set_state(K.RUN_STATE_SUCCEEDED)
    lines = (record.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["message"] for x in lines] == ["running", "tandem", "succeeded"]
    assert loaded.events[-1].sequence == 3 and loaded.events[-1].state == K.RUN_STATE_SUCCEEDED
    message = RunRecord.load(record.dir).message()
    assert message.state == K.RUN_STATE_SUCCEEDED and message.created_at.ToNanoseconds() == 1_800_000_000_500_000_000
