"""Thinking-model output: split the reasoning from the answer, and close a thought that ran over budget.

A Thinking checkpoint's generation prompt already opens ``<think>``, so its output holds
the thought, then ``</think>``, then the answer. The deep tier generates in two steps:
the thought up to a token budget (stopping at ``</think>``), then the answer after it.
When the budget ends the thought first, `continue_after_thought` closes it so the model
must answer. Reasoning never goes to the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# What a budget-forced close adds: a visible cue to the model that it must answer now.
FORCED_CLOSE = "\n\nI have thought enough; time to answer.\n" + THINK_CLOSE + "\n\n"


@dataclass(frozen=True)
class ThinkingSplit:
    reasoning: str
    answer: str
    closed: bool  # the output itself held </think>


def split_thinking(text: str) -> ThinkingSplit:
    """Reasoning before the first ``</think>``, the answer after it.

    Without ``</think>`` the whole text is unfinished reasoning and there is no answer.
    """
    head, sep, tail = text.partition(THINK_CLOSE)
    reasoning = head.replace(THINK_OPEN, "").strip()
    if not sep:
        return ThinkingSplit(reasoning=reasoning, answer="", closed=False)
    return ThinkingSplit(reasoning=reasoning, answer=tail.replace(THINK_CLOSE, "").strip(), closed=True)


def continue_after_thought(thought: str) -> tuple[str, bool]:
    """The assistant prefix to generate the answer from, and whether the model closed the thought.

    `thought` is what the model wrote inside ``<think>`` in the first step: it ends with
    ``</think>`` when the model closed it itself, otherwise the close is forced.
    """
    if THINK_CLOSE in thought:
        kept = thought[: thought.index(THINK_CLOSE)]
        return kept + THINK_CLOSE + "\n\n", True
    return thought + FORCED_CLOSE, False
