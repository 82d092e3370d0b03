"""Splitting a Thinking model's output and closing a thought that ran over budget."""

import pytest

from stream.thinking import FORCED_CLOSE, THINK_CLOSE, continue_after_thought, split_thinking


@pytest.mark.parametrize(
    ("raw", "reasoning", "answer", "closed"),
    [
        ("12 + 60 = 72.\n</think>\n\n[happy] It's 72!", "12 + 60 = 72.", "[happy] It's 72!", True),
        ("<think>plan</think>answer", "plan", "answer", True),
        ("still thinking about the comic", "still thinking about the comic", "", False),
        ("a</think>b</think>c", "a", "bc", True),
        ("</think>", "", "", True),
    ],
)
def test_split(raw, reasoning, answer, closed):
    split = split_thinking(raw)
    assert (split.reasoning, split.answer, split.closed) == (reasoning, answer, closed)


def test_a_thought_the_model_closed_is_continued_after_its_own_close():
    prefix, closed = continue_after_thought("The picture shows a sum.</think>")
    assert closed and prefix.endswith(THINK_CLOSE + "\n\n") and prefix.count(THINK_CLOSE) == 1


def test_a_thought_over_budget_is_closed_for_the_model():
    prefix, closed = continue_after_thought("First, twelve. Then thirty, and then")
    assert not closed
    assert prefix.startswith("First, twelve.") and prefix.endswith(FORCED_CLOSE)
    assert split_thinking(prefix + "[happy] 42!").answer == "[happy] 42!"
