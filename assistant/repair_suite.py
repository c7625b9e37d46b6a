"""The repair loop's sanity suite: ten everyday tasks, each with visible examples (what the loop may use) and
hidden asserts (what grades the result). `assistant repair --suite` runs them with the configured model."""

from __future__ import annotations

import sys
import time

from assistant.examples import Check

SUITE = [
    ("largest", "Return the largest number in a non-empty list.", "def largest(xs: list) -> float",
     ["largest([3, 1, 2]) == 3", "largest([-5, -2]) == -2"],
     ["largest([1]) == 1", "largest([0, 10, 5]) == 10", "largest([-1.5, -3]) == -1.5"]),
    ("is_ipv4", "Return True if the string is a valid IPv4 address: four decimal numbers 0-255 joined by dots.",
     "def is_ipv4(s: str) -> bool",
     ["is_ipv4('192.168.0.1') == True", "is_ipv4('256.1.1.1') == False", "is_ipv4('1.2.3') == False"],
     ["is_ipv4('0.0.0.0') == True", "is_ipv4('1.2.3.4.5') == False", "is_ipv4('a.b.c.d') == False",
      "is_ipv4('255.255.255.255') == True"]),
    ("quadratic_roots", "Return the real roots of a*x**2 + b*x + c as a sorted list (empty if none).",
     "def quadratic_roots(a: float, b: float, c: float) -> list",
     ["quadratic_roots(1, -3, 2) == [1.0, 2.0]", "quadratic_roots(1, 0, 1) == []"],
     ["quadratic_roots(1, 2, 1) == [-1.0, -1.0] or quadratic_roots(1, 2, 1) == [-1.0]",
      "quadratic_roots(2, 0, -8) == [-2.0, 2.0]"]),
    ("reverse_words", "Return the sentence with its words in reverse order.", "def reverse_words(s: str) -> str",
     ["reverse_words('hello world') == 'world hello'"],
     ["reverse_words('a b c') == 'c b a'", "reverse_words('one') == 'one'"]),
    ("is_palindrome", "Return True if the string reads the same backwards, ignoring case.",
     "def is_palindrome(s: str) -> bool",
     ["is_palindrome('Level') == True", "is_palindrome('abc') == False"],
     ["is_palindrome('') == True", "is_palindrome('Aba') == True", "is_palindrome('ab') == False"]),
    ("count_vowels", "Count the vowels (a, e, i, o, u; any case) in a string.", "def count_vowels(s: str) -> int",
     ["count_vowels('hello') == 2", "count_vowels('xyz') == 0"],
     ["count_vowels('AEIOU') == 5", "count_vowels('') == 0"]),
    ("factorial", "Return n! for a non-negative integer n.", "def factorial(n: int) -> int",
     ["factorial(0) == 1", "factorial(5) == 120"], ["factorial(1) == 1", "factorial(10) == 3628800"]),
    ("fizzbuzz", "Return 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for both, else the "
     "number as a string.", "def fizzbuzz(n: int) -> str",
     ["fizzbuzz(3) == 'Fizz'", "fizzbuzz(10) == 'Buzz'", "fizzbuzz(15) == 'FizzBuzz'", "fizzbuzz(7) == '7'"],
     ["fizzbuzz(30) == 'FizzBuzz'", "fizzbuzz(1) == '1'", "fizzbuzz(9) == 'Fizz'"]),
    ("mean", "Return the arithmetic mean of a non-empty list of numbers.", "def mean(xs: list) -> float",
     ["mean([1, 2, 3]) == 2.0"], ["mean([5]) == 5", "mean([1, 2]) == 1.5"]),
    ("celsius_to_fahrenheit", "Convert a temperature from Celsius to Fahrenheit.",
     "def celsius_to_fahrenheit(c: float) -> float",
     ["celsius_to_fahrenheit(0) == 32", "celsius_to_fahrenheit(100) == 212"],
     ["celsius_to_fahrenheit(-40) == -40", "celsius_to_fahrenheit(37) == 98.6 or "
      "abs(celsius_to_fahrenheit(37) - 98.6) < 1e-9"]),
]


def hidden_checks(asserts: list[str]) -> list[Check]:
    return [Check(f"bool({a})", "True") for a in asserts]


def run_suite(model, box, config, *, out=None, prompts=None) -> int:
    """Each task through the loop (signature and visible examples given), graded by its hidden asserts; with
    the hand-written prompts unless `prompts` says otherwise."""
    from assistant.doctest_runner import run_checks
    from assistant.repair import DEFAULT_PROMPTS, Request, outcome_record, solve

    prompts = prompts or DEFAULT_PROMPTS

    out = out or sys.stdout
    rows, hidden_ok, start, tasks = [], 0, time.monotonic(), []
    for name, task, signature, visible, hidden in SUITE:
        outcome = solve(model, box, Request(task, name, signature, visible), config, prompts=prompts)
        graded = run_checks(outcome.spec.code + "\n\n" + outcome.best.code, hidden_checks(hidden), fn=name, box=box)
        hidden_ok += graded.ok
        tasks.append({**outcome_record(outcome), "hidden_passed": graded.passed, "hidden_total": graded.total})
        r = outcome.best.report
        seen = f"{r.passed}/{r.total}" if r else "-"
        rows.append(f"{name:<22} {seen:>8} {graded.passed}/{graded.total:<6} {len(outcome.attempts):>10} "
                    f"{outcome.seconds:>7.1f}")
        print(rows[-1] if len(rows) > 1 else "task                    visible  hidden  candidates  seconds\n" + rows[-1],
              file=out, flush=True)
    name = getattr(model, "name", "?")
    print(f"{hidden_ok}/{len(SUITE)} tasks pass their hidden tests ({time.monotonic() - start:.0f} s, "
          f"model {name})", file=out)
    from assistant.charts import Panel, save_run

    save_run("repair-suite", {"model": name, "program": prompts.name, "passed": hidden_ok, "total": len(SUITE),
                              "tasks": tasks, "seconds": round(time.monotonic() - start, 1)},
             f"repair suite: {name}, {hidden_ok}/{len(SUITE)} pass their hidden tests", [
                 Panel("hidden tests passed (%)", [t["fn"] for t in tasks],
                       [100 * t["hidden_passed"] / max(t["hidden_total"], 1) for t in tasks], fmt="{:.0f}",
                       colors=["#2ca02c" if t["hidden_passed"] == t["hidden_total"] else "#d62728" for t in tasks],
                       ylim=(0, 115))], out)
    return 0 if hidden_ok == len(SUITE) else 1
