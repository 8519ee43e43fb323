"""gptfast.token_program: the compiler from tokenizer regexes to the C++ scanner's program.

Pure Python: these tests need no extension.  What the compiled programs *do*
is held to `re` by tests/test_tokenizer_parity.py; here we check the
programs themselves, the chunk separators and the reasons for refusing a
pattern.
"""
from __future__ import annotations

import re

import pytest

from gptfast.reference.tokenizer import CHAR_PATTERN, DEFAULT_WORD_PATTERN
from gptfast.token_program import (
    CAT_ANY,
    CAT_ANY_BUT_NEWLINE,
    CAT_DIGIT,
    CAT_NOT_DIGIT,
    CAT_NOT_SPACE,
    CAT_NOT_WORD,
    CAT_SPACE,
    CAT_WORD,
    UNLIMITED,
    CharClass,
    ClassBranch,
    LiteralBranch,
    Unsupported,
    compile_program,
    try_compile,
)

ALL_SEPARATORS = "\n \t\r\x0b\x0c"


def cls(categories=0, ranges=(), negate=False) -> CharClass:
    return CharClass(negate, categories, tuple(ranges))


# ------------------------------------------------------------------ programs
def test_seed_pattern_program():
    """\\d|\\w+|[^\\s]: a digit, a run of word characters, any other non-space."""
    program = compile_program(DEFAULT_WORD_PATTERN, [])
    assert program.branches == (
        ClassBranch(cls(CAT_DIGIT), 1, 1),
        ClassBranch(cls(CAT_WORD), 1, UNLIMITED),
        ClassBranch(cls(CAT_SPACE, negate=True), 1, 1),
    )
    assert program.separators == ALL_SEPARATORS


def test_seed_pattern_tuples_for_the_cpp_constructor():
    assert compile_program(DEFAULT_WORD_PATTERN, ["<END>"]).as_tuples() == [
        ("literal", "<END>", (False, 0, []), 0, 0),
        ("class", "", (False, CAT_DIGIT, []), 1, 1),
        ("class", "", (False, CAT_WORD, []), 1, UNLIMITED),
        ("class", "", (True, CAT_SPACE, []), 1, 1),
    ]


def test_specials_come_first_in_order_and_are_never_parsed():
    specials = ["<END>", "Ana:", "a|b", "\\w+", "(", "+34 600"]
    program = compile_program(DEFAULT_WORD_PATTERN, specials)
    assert program.branches[: len(specials)] == tuple(LiteralBranch(s) for s in specials)
    assert len(program.branches) == len(specials) + 3


def test_char_pattern_is_one_any_character_class():
    program = compile_program(CHAR_PATTERN, ["<END>"])
    assert program.branches == (LiteralBranch("<END>"), ClassBranch(cls(CAT_ANY), 1, 1))
    # One character at a time: every candidate is a safe cut.
    assert program.separators == ALL_SEPARATORS


@pytest.mark.parametrize(
    "pattern, branches",
    [
        (r".", (ClassBranch(cls(CAT_ANY_BUT_NEWLINE), 1, 1),)),
        (r"(?s:.)", (ClassBranch(cls(CAT_ANY), 1, 1),)),
        (r"(?s).", (ClassBranch(cls(CAT_ANY), 1, 1),)),
        (r"\S+", (ClassBranch(cls(CAT_NOT_SPACE), 1, UNLIMITED),)),
        (r"\d{1,3}", (ClassBranch(cls(CAT_DIGIT), 1, 3),)),
        (r"\w{2,}", (ClassBranch(cls(CAT_WORD), 2, UNLIMITED),)),
        (r"[A-Za-z]+", (ClassBranch(cls(ranges=[(65, 90), (97, 122)]), 1, UNLIMITED),)),
        (r"[^\W\d]", (ClassBranch(cls(CAT_NOT_WORD | CAT_DIGIT, negate=True), 1, 1),)),
        (r"\D", (ClassBranch(cls(CAT_NOT_DIGIT), 1, 1),)),
        (r"[^a]", (ClassBranch(cls(ranges=[(97, 97)], negate=True), 1, 1),)),
        (r"x", (LiteralBranch("x"),)),
        (r"\.\.\.", (LiteralBranch("..."),)),
        (r"(?:'s)|(\w+)", (LiteralBranch("'s"), ClassBranch(cls(CAT_WORD), 1, UNLIMITED))),
        (r"(?x) \w+  # words" "\n" r" | [^\s]",
         (ClassBranch(cls(CAT_WORD), 1, UNLIMITED), ClassBranch(cls(CAT_SPACE, negate=True), 1, 1))),
        (r"'s|'t|\w+|[^\s]",
         (LiteralBranch("'s"), LiteralBranch("'t"), ClassBranch(cls(CAT_WORD), 1, UNLIMITED),
          ClassBranch(cls(CAT_SPACE, negate=True), 1, 1))),
    ],
)
def test_supported_patterns(pattern, branches):
    program = compile_program(pattern, [])
    assert program.branches == branches
    assert try_compile(pattern, []) == (program, None)


# ---------------------------------------------------------------- separators
@pytest.mark.parametrize(
    "specials, pattern, separators",
    [
        ([], DEFAULT_WORD_PATTERN, ALL_SEPARATORS),
        (["<END>", "Sancho:"], DEFAULT_WORD_PATTERN, ALL_SEPARATORS),
        # A special containing a space could be cut in two at a space.
        (["Sancho:", "+34 600 11 22 33"], DEFAULT_WORD_PATTERN, "\n\t\r\x0b\x0c"),
        (["<END>\n"], DEFAULT_WORD_PATTERN, " \t\r\x0b\x0c"),
        (["a\r\nb", "x\ty"], DEFAULT_WORD_PATTERN, " \x0b\x0c"),
        ([], r"\s+|\S+", ""),  # runs of whitespace can span any of them
        ([], r"[^\n]+|\s", "\n"),  # only the newline ends every run
        ([], r"\s|\w+", ALL_SEPARATORS),  # one whitespace character ends where it starts
        ([], r"\s{1,2}|\w+", ""),
        ([], r"\w+|[^\w\s]+", ALL_SEPARATORS),
        ([], r"\n\n|\w+|.", " \t\r\x0b\x0c"),  # a literal in the pattern counts too
        (["o b"], CHAR_PATTERN, "\n\t\r\x0b\x0c"),
    ],
)
def test_separators(specials, pattern, separators):
    assert compile_program(pattern, specials).separators == separators


# --------------------------------------------------------------- unsupported
@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"\s*\w+", "an alternative must be one literal string or one (repeated) character class"),
        (r"ab|ac", "an alternative must be one literal string"),  # re factors it into a[bc]
        (r"x|xy", "an alternative must be one literal string"),
        (r"\w+|", "an alternative must be one literal string"),
        (r"(?i)abc|\w+", "flags other than DOTALL and VERBOSE"),
        (r"(?a)\w+", "flags other than DOTALL and VERBOSE"),
        (r"(?m)\w+", "flags other than DOTALL and VERBOSE"),
        (r"(?i:a)|b", "inline flags other than DOTALL inside a group"),
        (r"\w*", "repeats that can match the empty string"),
        (r"\w?|x", "repeats that can match the empty string"),
        (r"a{0,3}", "repeats that can match the empty string"),
        (r"(?:ab)+", "a repeat must apply to one character class"),
        (r"\w+?", "MIN_REPEAT"),
        (r"\w++", "POSSESSIVE_REPEAT"),
        (r"(?>\w+)", "ATOMIC_GROUP"),
        (r"(?=a)\w", "an alternative must be one literal string"),
        (r"(?<=a)\w", "an alternative must be one literal string"),
        (r"(a)\1|\w", "an alternative must be one literal string"),
        (r"\bfoo|\w", "an alternative must be one literal string"),
        (r"^\w+", "an alternative must be one literal string"),
        (r"(?s:\w+|.)", "BRANCH"),
    ],
)
def test_unsupported_patterns_name_the_reason(pattern, reason):
    re.compile(pattern)  # valid `re`: only outside the scanner's subset
    with pytest.raises(Unsupported, match=re.escape(reason)):
        compile_program(pattern, [])
    program, why = try_compile(pattern, ["<END>"])
    assert program is None and reason in why


def test_common_prefix_factoring_only_when_every_alternative_shares_it():
    """re rewrites ab|ac as a[bc] (unsupported), but not ab|ac|\\w."""
    assert compile_program(r"ab|ac|\w", []).branches == (
        LiteralBranch("ab"), LiteralBranch("ac"), ClassBranch(cls(CAT_WORD), 1, 1),
    )


def test_single_character_alternatives_become_one_class():
    """re merges ``\\w|\\d`` into one set; the program is the same class run."""
    assert compile_program(r"(?:\w|\d)+", []).branches == (ClassBranch(cls(CAT_WORD | CAT_DIGIT), 1, UNLIMITED),)


# ------------------------------------------------------- Python class twin
@pytest.mark.parametrize("pattern", [r"\w", r"\d", r"\s", r"\W", r"\D", r"\S", r"[^\w\s]", r"[a-f\d]", r".", r"(?s:.)"])
def test_char_class_twin_matches_re(pattern):
    """CharClass.matches (used to pick separators) agrees with `re`."""
    (branch,) = compile_program(pattern, []).branches
    for ch in "aZ_5٣²½ \n\t\x0b\x1c\u00a0\u2028-.🤓\x00日\u0303":
        assert branch.cls.matches(ch) == bool(re.fullmatch(pattern, ch)), (pattern, ch)
