"""The learner's domain records as LearnerService messages: the one place run status and events meet the proto."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.runs.config import config_message
from services.learner.runs.events import RunEvent
from services.learner.runs.records import RunRecord, RunStatus, state_of

_KINDS = {
    "state": learner_pb2.RUN_EVENT_KIND_STATE,
    "train": learner_pb2.RUN_EVENT_KIND_TRAIN_STEP,
    "eval": learner_pb2.RUN_EVENT_KIND_EVALUATION,
    "round": learner_pb2.RUN_EVENT_KIND_ROUND,
    "log": learner_pb2.RUN_EVENT_KIND_LOG,
}
_STATES = {status: learner_pb2.RunState.Value(f"RUN_STATE_{status.name}") for status in RunStatus}


def _timestamp(seconds: float | None) -> Timestamp | None:
    """A Timestamp from epoch seconds; None (the field stays unset) for a moment that has not come."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def run_state(status: RunStatus) -> learner_pb2.RunState.ValueType:
    return _STATES[status]


def run_message(record: RunRecord) -> learner_pb2.Run:
    return learner_pb2.Run(
        run_id=record.run_id,
        config=config_message(record.config),
        state=_STATES[record.status],
        created_at=_timestamp(record.created_at),
        started_at=_timestamp(record.started_at),
        finished_at=_timestamp(record.finished_at),
        step=record.step,
        round=record.round,
        metrics=record.metrics,
        error=record.error,
        report_uri=record.report_uri,
    )


def event_message(run_id: str, sequence: int, event: RunEvent) -> learner_pb2.RunEvent:
    message = learner_pb2.RunEvent(
        run_id=run_id,
        sequence=sequence,
        kind=_KINDS.get(event.kind, learner_pb2.RUN_EVENT_KIND_UNSPECIFIED),
        time=_timestamp(event.time),
        step=event.step,
        round=event.round,
        metrics=event.metrics,
        message=event.message,
    )
    if (status := state_of(event)) is not None:
        message.state = _STATES[status]
    elif event.kind == "state":
        message.state = learner_pb2.RUN_STATE_UNSPECIFIED
    return message
