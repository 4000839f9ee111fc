"""Prompt lint from the vendor pages' advice, from tables: words, repeats, camera syntax."""

from __future__ import annotations

import pytest

from runner.checks.prompts import lint
from runner.diagnostics import Diagnostic, Severity, warning

GOOD = "a deer slowly walks through the misty forest as fog drifts between the pines"


def only(findings: list[Diagnostic], severity: Severity) -> list[str]:
    return [f.message for f in findings if f.severity == severity]


@pytest.mark.parametrize(
    ("prompt", "director"),
    [
        (GOOD, False),
        (GOOD, True),
        ("[Truck left, Pan right, Zoom in] a city at night with neon signs flickering", True),
        ("[Static shot] waves roll onto the beach while gulls circle above the sand", True),
        ("[Pan left] a fox runs across the snow [Zoom in] and stops to look back", True),
        (GOOD + ", turning around slowly", False),
    ],
)
def test_good_prompts_pass_without_findings(prompt: str, director: bool) -> None:
    assert lint(prompt, director=director) == []


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_an_error(prompt: str) -> None:
    (finding,) = lint(prompt, director=False)
    assert finding.severity == Severity.ERROR and finding.message.startswith("is empty")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("deer", "has only 1 word; the vendor advises 10-20 words with concrete verbs of motion"),
        ("deer walks", "has only 2 words; the vendor advises 10-20 words"),
        (" ".join(["walk"] + [f"w{n}" for n in range(60)]), "has 61 words; the vendor advises"),
    ],
)
def test_too_few_or_too_many_words_warn(prompt: str, message: str) -> None:
    (finding,) = lint(prompt, director=False)
    assert finding.severity == Severity.WARNING and finding.message.startswith(message)


def test_three_and_sixty_words_are_fine() -> None:
    assert lint("a deer walks", director=False) == []
    assert lint(" ".join(f"w{n}" for n in range(60)), director=False) == []


@pytest.mark.parametrize(
    ("prompt", "repeated"),
    [
        (
            "a boy running running running fast fast fast",
            [
                'repeats "running" back to back ("running running running")',
                'repeats "fast" back to back ("fast fast fast")',
            ],
        ),
        ("the wind blows, blows through tall grass", ['repeats "blows" back to back']),
        ("she turns around turns around in the rain", ['repeats "turns around" back to back']),
        ("Slowly slowly the boat drifts away", ['repeats "Slowly" back to back']),
        ("a dog runs and runs in the park", []),  # not back to back
    ],
)
def test_back_to_back_repeats_warn_once_each(prompt: str, repeated: list[str]) -> None:
    messages = only(lint(prompt, director=False), Severity.WARNING)
    assert len(messages) == len(repeated)
    for message, start in zip(messages, repeated, strict=True):
        assert message.startswith(start)
        assert message.endswith("the vendor warns that repeated words make the animation unstable")


@pytest.mark.parametrize(
    ("prompt", "errors"),
    [
        (
            "[Pan up] a deer walks slowly through the misty forest at dawn",
            ['has the unknown camera move "Pan up"; did you mean "Tilt up"?'],
        ),
        (
            "[Zoom-in] a deer walks slowly through the misty forest at dawn",
            ['has the unknown camera move "Zoom-in"; did you mean "Zoom in"?'],
        ),
        (
            "[Barrel roll] a deer walks slowly through the misty forest at dawn",
            ['has the unknown camera move "Barrel roll"; Director models know: Truck left,'],
        ),
        (
            "[Pan left, Zoom in, Shake, Tilt up] a deer walks slowly through the forest",
            [
                'has 4 camera moves in "[Pan left, Zoom in, Shake, Tilt up]"; Director models '
                "take at most 3 per bracket"
            ],
        ),
        (
            "[Pan left a deer walks slowly through the misty forest at dawn",
            ["has a '[' at character 1 that is never closed with ']'"],
        ),
        (
            "a deer walks] slowly through the misty forest at dawn light",
            ["has a ']' at character 13 without a '[' before it"],
        ),
        (
            "[Pan left [Zoom in]] a deer walks slowly through the misty forest",
            [
                "has a '[' at character 11 inside the bracket opened at character 1; "
                "camera brackets do not nest",
                "has a ']' at character 20 without a '[' before it",
            ],
        ),
        (
            "[] a deer walks slowly through the misty forest at dawn",
            ['has an empty bracket "[]"; name 1-3 camera moves or remove it'],
        ),
        (
            "[Pan left,] a deer walks slowly through the misty forest at dawn",
            ['has an empty camera move in "[Pan left,]" (a stray comma?)'],
        ),
    ],
)
def test_director_camera_syntax_errors(prompt: str, errors: list[str]) -> None:
    got = only(lint(prompt, director=True), Severity.ERROR)
    assert len(got) == len(errors), got
    for message, start in zip(got, errors, strict=True):
        assert message.startswith(start)


def test_a_camera_move_in_other_letter_case_is_a_warning_naming_the_vendor_spelling() -> None:
    (finding,) = lint("[pan LEFT] a deer walks slowly through the misty forest", director=True)
    assert finding == warning('writes the camera move "pan LEFT"; the vendor writes "Pan left"')


def test_camera_moves_do_not_count_as_words() -> None:
    (finding,) = lint("[Truck left, Pan right, Zoom in] deer", director=True)
    assert finding.message.startswith("has only 1 word")


def test_brackets_are_not_camera_syntax_for_other_models() -> None:
    assert (
        only(lint("a deer] walks [slowly through the misty forest", director=False), Severity.ERROR)
        == []
    )
    (finding,) = lint("[Pan left] a deer walks slowly through the misty forest", director=False)
    assert finding.severity == Severity.WARNING
    assert finding.message.startswith("holds camera moves in square brackets, but only Director")
