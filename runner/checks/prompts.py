"""Prompt lint from the vendor pages' advice (pure).

The Hailuo I2V page advises 10-20 words with concrete verbs of motion, and warns that repeated
words ("a boy running running running fast fast fast") make the animation unstable. The
Director page puts camera moves in square brackets, up to 3 per bracket, comma separated, from
a fixed vocabulary (``models.DIRECTOR_CAMERA_MOVES``): ``[Truck left, Pan right, Zoom in] ...``.

Everything here is advice, so a warning, except what a model cannot use: an empty prompt, and
for Director models a camera instruction it cannot parse (an unknown move, more than 3 moves in
one bracket, unbalanced or nested brackets).
"""

from __future__ import annotations

import difflib
import itertools
import json
import operator
import re

from runner.diagnostics import Diagnostic, error, warning
from runner.models import DIRECTOR_CAMERA_MOVES

#: Fewer words than this give the model too little to animate; more than MAX_WORDS blur the
#: motion. The vendor's sweet spot (ADVISED_WORDS) is quoted in the messages.
MIN_WORDS = 3
MAX_WORDS = 60
ADVISED_WORDS = (10, 20)
#: The Director page: "up to 3 per bracket".
MAX_MOVES_PER_BRACKET = 3
#: Repeated phrases up to this many words are looked for ("fast fast", "turns around turns around").
MAX_REPEAT_WORDS = 4

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_MOVES = {move.casefold(): move for move in DIRECTOR_CAMERA_MOVES}
#: Names people write for the moves the vocabulary calls otherwise.
_SYNONYMS = {
    "pan up": "Tilt up",
    "pan down": "Tilt down",
    "dolly in": "Push in",
    "dolly out": "Pull out",
    "track left": "Truck left",
    "track right": "Truck right",
    "crane up": "Pedestal up",
    "crane down": "Pedestal down",
    "tracking": "Tracking shot",
    "static": "Static shot",
    "handheld": "Shake",
    "camera shake": "Shake",
}


def lint(prompt: str, *, director: bool) -> list[Diagnostic]:
    """Everything the vendor pages advise against in ``prompt``, for a Director model or not."""
    if not prompt.strip():
        return [error("is empty: describe the motion you want, e.g. a deer walks through the fog")]
    found: list[Diagnostic] = []
    brackets, bracket_problems = _brackets(prompt)
    text = prompt
    if director:
        found += bracket_problems
        for content in brackets:
            found += _camera_moves(content)
        text = _without_brackets(prompt)
    elif any(_looks_like_moves(content) for content in brackets):
        found.append(
            warning(
                "holds camera moves in square brackets, but only Director models read them; "
                "this model takes them as words of the description"
            )
        )
    words = _WORD.findall(text)
    found += _word_count(len(words))
    found += _repeats(words)
    return found


def _word_count(count: int) -> list[Diagnostic]:
    low, high = ADVISED_WORDS
    advice = f"the vendor advises {low}-{high} words with concrete verbs of motion"
    if count < MIN_WORDS:
        described = "no words" if count == 0 else f"only {count} word" + ("s" if count > 1 else "")
        return [warning(f"has {described}; {advice}")]
    if count > MAX_WORDS:
        return [warning(f"has {count} words; {advice}: long prompts blur the motion")]
    return []


def _repeats(words: list[str]) -> list[Diagnostic]:
    """A warning for each word or phrase repeated back to back ("running running")."""
    folded = list(map(str.casefold, words))
    if len(set(folded)) == len(folded):
        return []  # no word twice: no repeat
    # A repeat of n words starts with a word equal to the one n words on: only those places
    # are looked at (found without a Python step per word).
    starts: set[int] = set()
    for n in range(1, MAX_REPEAT_WORDS + 1):
        starts.update(itertools.compress(itertools.count(), map(operator.eq, folded, folded[n:])))
    if not starts:
        return []
    found: list[Diagnostic] = []
    seen: set[tuple[str, ...]] = set()
    i = 0
    for start in sorted(starts):
        if start < i:
            continue  # inside the repeat found last
        i = start
        for n in range(1, MAX_REPEAT_WORDS + 1):
            if i + n >= len(folded) or folded[i] != folded[i + n]:
                continue
            phrase = folded[i : i + n]
            if len(phrase) < n or folded[i + n : i + 2 * n] != phrase:
                continue
            times = 2
            while folded[i + times * n : i + (times + 1) * n] == phrase:
                times += 1
            if tuple(phrase) not in seen:
                seen.add(tuple(phrase))
                shown = " ".join(words[i : i + times * n])
                found.append(
                    warning(
                        f"repeats {_q(' '.join(words[i : i + n]))} back to back ({_q(shown)}); "
                        "the vendor warns that repeated words make the animation unstable"
                    )
                )
            i += times * n
            break
    return found


def _brackets(prompt: str) -> tuple[list[str], list[Diagnostic]]:
    """The contents of the square brackets and the problems of their nesting.

    A bracket with another '[' inside is reported as such, and its content is not returned.
    """
    contents: list[str] = []
    problems: list[Diagnostic] = []
    if "[" not in prompt and "]" not in prompt:
        return contents, problems  # most prompts: no need to walk them character by character
    opened: int | None = None
    nested = False
    for position, char in enumerate(prompt):
        if char == "[":
            if opened is not None:
                nested = True
                problems.append(
                    error(
                        f"has a '[' at character {position + 1} inside the bracket opened at "
                        f"character {opened + 1}; camera brackets do not nest"
                    )
                )
                continue
            opened = position
        elif char == "]":
            if opened is None:
                problems.append(
                    error(f"has a ']' at character {position + 1} without a '[' before it")
                )
                continue
            if not nested:
                contents.append(prompt[opened + 1 : position])
            opened, nested = None, False
    if opened is not None:
        problems.append(error(f"has a '[' at character {opened + 1} that is never closed with ']'"))
    return contents, problems


def _camera_moves(content: str) -> list[Diagnostic]:
    """The problems of one bracket of camera moves: unknown names, too many, empty entries."""
    names = [name.strip() for name in content.split(",")]
    shown = f"[{content}]"
    if not any(names):
        return [error(f"has an empty bracket {_q(shown)}; name 1-3 camera moves or remove it")]
    found: list[Diagnostic] = []
    if len(names) > MAX_MOVES_PER_BRACKET:
        found.append(
            error(
                f"has {len(names)} camera moves in {_q(shown)}; Director models take at most "
                f"{MAX_MOVES_PER_BRACKET} per bracket"
            )
        )
    for name in names:
        if not name:
            found.append(error(f"has an empty camera move in {_q(shown)} (a stray comma?)"))
            continue
        known = _MOVES.get(" ".join(name.split()).casefold())
        if known is None:
            found.append(error(_unknown_move(name)))
        elif known != name:
            found.append(
                warning(f"writes the camera move {_q(name)}; the vendor writes {_q(known)}")
            )
    return found


def _unknown_move(name: str) -> str:
    folded = " ".join(name.split()).casefold()
    close = difflib.get_close_matches(folded, list(_MOVES), n=1, cutoff=0.5)
    suggestion = _SYNONYMS.get(folded) or (_MOVES[close[0]] if close else None)
    if suggestion:
        return f"has the unknown camera move {_q(name)}; did you mean {_q(suggestion)}?"
    known = ", ".join(DIRECTOR_CAMERA_MOVES)
    return f"has the unknown camera move {_q(name)}; Director models know: {known}"


def _looks_like_moves(content: str) -> bool:
    return any(" ".join(n.split()).casefold() in _MOVES for n in content.split(","))


def _without_brackets(prompt: str) -> str:
    return re.sub(r"\[[^\[\]]*\]", " ", prompt)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
