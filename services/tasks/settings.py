"""The task settings every service and adapter shares: ``LEGIBILITY_TASK``, ``_DATA``, ``_CHAT_TEMPLATE``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator

from services.common.settings import LegibilitySettings
from services.tasks.base import Task
from services.tasks.catalog import TASK_NAMES, load_task
from services.tasks.prompts import ChatTemplateMode, PromptFormat


class TaskSettings(LegibilitySettings):
    """Which task (dataset and formats) prompts, answers and verifier inputs follow."""

    task: str = "toy"
    """Task name: toy (the bundled toy world), gsm8k or math."""
    data: Path | None = None
    """The task's data: a jsonl file (split by a hash of each question) or a directory of train.jsonl / test.jsonl.
    Required by gsm8k and math; nothing is downloaded."""
    chat_template: ChatTemplateMode = "auto"
    """auto: prompts and verifier inputs go through the tokenizer's chat template when it has one; none: never."""

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASK_NAMES:
            raise ValueError(f"unknown task {value!r}; choose one of {', '.join(TASK_NAMES)}")
        return value

    def load_task(self) -> Task:
        return load_task(self.task, self.data)

    def prompt_format(self, tokenizer: Any | None) -> PromptFormat:
        return PromptFormat(self.load_task(), tokenizer, self.chat_template)
