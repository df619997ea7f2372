"""A code verdict the candidate cannot touch: its functions are served from the sandbox, the tests
run in a second, trusted process that calls them over a pipe and compares the values itself.

Why: when a program's tests run in the candidate's own interpreter and a pass is "exit status 0",
wrong code scores 1 by exiting early (``sys.exit(0)``, ``os._exit(0)``, an ``atexit`` hook),
by returning an object whose ``__eq__`` is always true, or by patching what the checks call
(``json.loads``, ``sys.exit``). A policy trained by RL finds such holes. Here:

- **the server** (``SERVER``, run in the sandbox of harness/sandbox.py) executes the candidate's
  source and answers requests on its stdin/stdout, one JSON line each: call a function, call a
  method of a class, or run the program as ``__main__`` on a given stdin and return what it printed.
  Its exit status means nothing; whatever it does to its own interpreter it can only change what
  it answers.
- **the judge** (``JUDGE``, a plain ``python -I`` process that never runs candidate code) holds the
  tests. HumanEval's ``check(candidate)`` gets a proxy whose calls go to the server; LiveCodeBench's
  expected outputs are compared in the judge. Answers are decoded strictly into plain built-in
  values (None, bool, int, float, str, bytes and lists, tuples, dicts, sets of them), so the
  comparison is Python's own on plain data. A pass is the judge reaching the end of the tests.

The wire format (``encode``/``decode``, shared by both sides): JSON scalars and lists as they are;
every other plain value as a one-key object tagged by its type ({"tuple": [...]}, {"dict":
[[k, v], ...]}, {"set": [...]}, {"frozenset": [...]}, {"bytes": "hex"}, {"float": "nan"}).
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # one answer line; a longer one fails the call
JUDGE_MEMORY_MB = 2048  # the judge's address space: it decodes what the candidate sends


def encode(value: Any) -> Any:
    """A plain value as JSON-ready data (see the module docstring); anything else raises TypeError.
    Exact types (``type(x) is int``): a subclass may override comparison, so it is not plain.
    numpy's scalars and arrays are sent as their ``tolist()``."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        return [encode(item) for item in value]
    if kind is tuple:
        return {"tuple": [encode(item) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if kind in (set, frozenset):
        return {kind.__name__: [encode(item) for item in value]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind.__module__ == "numpy" and hasattr(value, "tolist"):
        # a task may declare numpy: its scalars and arrays stand for their plain values (whatever
        # tolist gives is encoded, and decoded strictly, like any other answer)
        return encode(value.tolist())
    raise TypeError(f"not a plain value: {kind.__name__}")


def decode(data: Any) -> Any:
    """The plain value ``data`` encodes; ValueError for anything ``encode`` cannot have made."""
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(item) for item in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            items = [decode(item) for item in body]
            if tag == "tuple":
                return tuple(items)
            if tag == "set":
                return set(items)
            if tag == "frozenset":
                return frozenset(items)
            if tag == "dict" and all(type(pair) is list and len(pair) == 2 for pair in items):
                return {key: value for key, value in items}
    raise ValueError(f"not an encoded plain value: {str(data)[:80]}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"bare {name} on the wire (non-finite floats are tagged)")


def read_answer(line: str, turn: str | None = None) -> Any:
    """One answer line of the server, decoded (the judge's side): its value, or CandidateError.
    ``turn``: the request's id, which the answer must carry. The candidate runs in the server's
    process and can write on the wire's descriptors: lines it writes ahead of time (the known
    answers of a public test, in order) cannot carry ids the judge has not drawn yet."""
    if not line.endswith("\n"):
        raise CandidateError("the candidate's process ended or sent no complete answer")
    answer = json.loads(line, parse_constant=_no_constants)
    if type(answer) is not dict:
        raise CandidateError("malformed answer")
    if turn is not None and answer.get("id") != turn:
        raise CandidateError("an answer out of turn (not the one to this request)")
    if "error" in answer:
        raise CandidateError(str(answer["error"])[:200])
    return decode(answer["value"])


class CandidateError(Exception):
    """A call into the candidate that did not return a plain value."""


# ---------------------------------------------------------------------------------------------
# The server: appended to the sandbox's guard and run there (harness/sandbox.py). It keeps the
# protocol's ends as private descriptors and points 0 and 1 at /dev/null, so what the candidate
# prints cannot land on the wire.

SERVER_HEAD = (
    """
import io, json, math, os, sys, traceback
Any = object
_rx = os.fdopen(os.dup(0), "r", encoding="utf-8")
_tx = os.fdopen(os.dup(1), "w", encoding="utf-8")
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(_null, 1)
sys.stdin = io.StringIO("")
"""
    + inspect.getsource(encode)
    + inspect.getsource(decode)
)
SERVER_BODY = """
_code = compile(SOURCE, "<solution>", "exec")
_scope = {"__name__": "solution"}
_loaded = None
if LOAD:
    try:
        exec(_code, _scope)
    except BaseException as exc:
        traceback.print_exc()
        _loaded = type(exc).__name__

def _main(stdin):
    sys.stdin, printed = io.StringIO(stdin), io.StringIO()
    sys.stdout = printed
    try:
        exec(_code, {"__name__": "__main__"})
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    finally:
        sys.stdout, sys.stdin = sys.__stdout__, io.StringIO("")
    return printed.getvalue()

def _answer(request):
    args = [decode(arg) for arg in request.get("args", [])]
    if request["op"] == "main":
        return _main(request["stdin"])
    if _loaded is not None:
        raise RuntimeError("the solution did not load: " + _loaded)
    if request["op"] == "call":
        return _scope[request["name"]](*args)
    if request["op"] == "method":
        return getattr(_scope[request["class"]](), request["name"])(*args)
    raise ValueError("unknown request")

for _line in _rx:
    _turn = None
    try:
        _request = json.loads(_line)
        _turn = _request.get("id")
        _reply = {"value": encode(_answer(_request))}
    except BaseException as exc:
        traceback.print_exc(limit=3)
        _reply = {"error": type(exc).__name__}
    _reply["id"] = _turn
    _tx.write(json.dumps(_reply) + "\\n")
    _tx.flush()
"""


def server_program(source: str, load: bool) -> str:
    """The sandbox program that serves ``source``: ``load`` executes it once at start (functions
    and classes to call); otherwise it only runs as ``__main__`` per request (stdin programs)."""
    return f"{SERVER_HEAD}\nSOURCE = {source!r}\nLOAD = {bool(load)}\n{SERVER_BODY}"


# ---------------------------------------------------------------------------------------------
# The judge: trusted test code, run as ``python -I -c JUDGE FD_IN FD_OUT`` outside the sandbox.
# Its stdin brings the spec, {"kind": "humaneval" | "livecodebench", ...}, never written to a file
# a program could read; FD_IN reads the server's answers, FD_OUT sends it requests. Exit 0 means
# every test passed.

JUDGE = (
    """
import json, math, os, sys
Any = object
"""
    + "MAX_ANSWER_BYTES = "
    + repr(MAX_ANSWER_BYTES)
    + "\n"
    + inspect.getsource(CandidateError)
    + inspect.getsource(encode)
    + inspect.getsource(decode)
    + inspect.getsource(_no_constants)
    + inspect.getsource(read_answer)
    + """
SPEC = json.loads(sys.stdin.buffer.read())
_rx = os.fdopen(int(sys.argv[1]), "r", encoding="utf-8")
_tx = os.fdopen(int(sys.argv[2]), "w", encoding="utf-8")

def ask(op, **request):
    request["op"] = op
    request["id"] = os.urandom(16).hex()  # drawn now: no line written before this request has it
    request["args"] = [encode(arg) for arg in request.get("args", [])]
    _tx.write(json.dumps(request) + "\\n")
    _tx.flush()
    return read_answer(_rx.readline(MAX_ANSWER_BYTES), request["id"])

def prompt_scope(prompt):
    # The prompt's definitions, for tests that use its helpers. A prompt may end at a bare
    # signature (def f(x):): it is given a body, at the indentation of a function or a method.
    for source in (prompt, prompt + "\\n    pass\\n", prompt + "\\n        pass\\n"):
        try:
            code = compile(source, "<prompt>", "exec")
        except SyntaxError:
            continue
        scope = {"__name__": "__judge__"}
        exec(code, scope)
        return scope
    return {"__name__": "__judge__"}

def humaneval():
    scope = prompt_scope(SPEC["prompt"])
    entry_point = SPEC["entry_point"]
    candidate = lambda *args: ask("call", name=entry_point, args=list(args))  # noqa: E731
    scope[entry_point] = candidate  # a test may name it (HumanEval/33 does), as in one interpreter
    exec(compile(SPEC["test"], "<test>", "exec"), scope)
    scope["check"](candidate)

def livecodebench():
    for test in SPEC["tests"]:
        if test.get("testtype") == "functional":
            args = [json.loads(line) for line in test["input"].splitlines() if line.strip()]
            got = ask("method", **{"class": "Solution"}, name=SPEC["function"], args=args)
            if got != json.loads(test["output"]):
                sys.exit(1)
        else:
            printed = ask("main", stdin=test["input"])
            if type(printed) is not str or printed.split() != test["output"].split():
                sys.exit(1)

try:
    {"humaneval": humaneval, "livecodebench": livecodebench}[SPEC["kind"]]()
except BaseException as exc:
    print(type(exc).__name__ + ": " + str(exc)[:300], file=sys.stderr)
    os._exit(1)
os._exit(0)
"""
)
