"""The embedded default corpus: real English text that every Python installation carries.

Why: `run.sh` must demonstrate the whole pipeline on a fresh machine with no network and no
FineWeb shards. The standard library's docstrings and the `pydoc` help topics are several MB
of real prose (plus some code), present wherever Python is, and identical for a given Python
version and platform. This module turns them into a list of documents:

  * one document per `pydoc_data.topics.topics` entry (the text `help("with")` shows);
  * one document per standard-library module: its docstring followed by the docstrings of
    the classes, functions and methods it defines, each led by its qualified name.

Importing every standard-library module has side effects (`antigravity` opens a browser,
`this` prints, tkinter may open windows, some modules install signal handlers or atexit
hooks), so the harvest runs in a separate, isolated interpreter (`python -I`) with its
output thrown away, a skip list for the known offenders, no DISPLAY and no stdin. The
result is sorted, deduplicated (the same docstring is kept once, at its first module in
sorted order) and finally shuffled with a fixed seed so that "the first N documents" (the
validation split) is a fair sample of topics and modules rather than all of one kind.

Usage: `python data/corpus.py --stats` prints the number of documents and bytes;
`python data/corpus.py --out corpus.jsonl` writes the documents as JSON lines.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

# Top-level names never imported: side effects on import, GUI toolkits, test suites, or
# modules that write files (lib2to3 pickles its grammar next to itself).
SKIP_TOP_LEVEL = frozenset({
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "ensurepip", "pydoc_data", "xxlimited", "xxlimited_35", "xxsubtype", "_xxtestfuzz",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple", "_testmultiphase",
    "_testclinic", "_testsinglephase", "_ctypes_test", "_tkinter", "msilib", "winreg", "msvcrt",
    "_winapi", "winsound", "_msi", "_overlapped", "nturl2path", "_pyrepl", "site", "sitecustomize",
    "usercustomize", "__main__", "idle", "pip", "setuptools", "_distutils_hack", "distutils",
    "encodings",
})
# Any dotted name containing one of these parts is a test package (ctypes.test, ...).
SKIP_PARTS = frozenset({"test", "tests", "idle_test", "__main__"})
SHUFFLE_SEED = 20240520
HARVEST_TIMEOUT_SECONDS = 120

# The harvester, run as `python -I -c HARVEST_SCRIPT OUTPUT_PATH SKIP_JSON`. It writes a JSON
# object {"modules": {name: text}, "topics": {name: text}}. Kept as a string so that the
# parent process imports nothing from the standard library it does not already need.
HARVEST_SCRIPT = r'''
import importlib, importlib.util, inspect, json, os, pkgutil, sys, sysconfig, warnings
output_path, skip_top, skip_parts = sys.argv[1], set(json.loads(sys.argv[2])), set(json.loads(sys.argv[3]))
warnings.simplefilter("ignore")

def stdlib_dirs():
    stdlib = sysconfig.get_paths()["stdlib"]
    return [stdlib, os.path.join(stdlib, "lib-dynload")]

def wanted(name):
    parts = name.split(".")
    return parts[0] not in skip_top and not parts[0].startswith("__") and not (skip_parts & set(parts))

def module_names():
    names = set(n for n in sys.builtin_module_names if wanted(n))
    for info in pkgutil.iter_modules(stdlib_dirs()):
        if info.name.isidentifier() and wanted(info.name):
            names.add(info.name)
            if info.ispkg:
                names.update(submodules(info.name))
    return sorted(names)

def submodules(package_name):
    # Walk a package's directory tree without importing it (pkgutil.walk_packages imports).
    try:
        spec = importlib.util.find_spec(package_name)
    except Exception:
        return []
    found = []
    for path in (spec.submodule_search_locations or []) if spec else []:
        for info in pkgutil.iter_modules([path]):
            full = package_name + "." + info.name
            if info.name.isidentifier() and wanted(full):
                found.append(full)
                if info.ispkg:
                    found.extend(submodules(full))
    return found

def clean(doc):
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""

def own_members(namespace, module_name):
    for key in sorted(namespace):
        value = namespace[key]
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, property) or getattr(value, "__module__", None) == module_name:
            yield key, value

def module_text(module):
    name = module.__name__
    pieces = [("", clean(module.__doc__))]
    for key, value in own_members(vars(module), name):
        if inspect.isclass(value):
            pieces.append((name + "." + key, clean(value.__doc__)))
            for member, item in own_members(vars(value), name):
                if callable(item) or isinstance(item, property):
                    pieces.append((name + "." + key + "." + member, clean(item.__doc__)))
        elif inspect.isroutine(value):
            pieces.append((name + "." + key, clean(value.__doc__)))
    return [(label, text) for label, text in pieces if text]

modules = {}
for name in module_names():
    try:
        module = importlib.import_module(name)
        modules[name] = module_text(module)
    except BaseException:
        continue
import pydoc_data.topics
topics = {key: value for key, value in pydoc_data.topics.topics.items() if isinstance(value, str)}
with open(output_path, "w", encoding="utf-8") as handle:
    json.dump({"modules": modules, "topics": topics}, handle)
'''


def harvest(python: str = sys.executable) -> dict:
    """Run the harvester in an isolated child interpreter; return its JSON result."""
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "harvest.json"
        command = [python, "-I", "-c", HARVEST_SCRIPT, str(output),
                   json.dumps(sorted(SKIP_TOP_LEVEL)), json.dumps(sorted(SKIP_PARTS))]
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env, cwd=folder, timeout=HARVEST_TIMEOUT_SECONDS)
        if not output.exists():
            raise RuntimeError("the standard-library harvester produced no output")
        return json.loads(output.read_text(encoding="utf-8"))


def documents_from_harvest(result: dict) -> list[str]:
    """Topics then modules, each sorted by name, docstrings deduplicated, then a seeded shuffle."""
    documents = []
    for name in sorted(result["topics"]):
        text = result["topics"][name].strip()
        if text:
            documents.append(text)
    seen: set[str] = set()
    for name in sorted(result["modules"]):
        parts = []
        for label, text in result["modules"][name]:
            if text in seen:
                continue
            seen.add(text)
            parts.append(text if not label else f"{label}\n{text}")
        if parts:
            documents.append(f"Module {name}\n\n" + "\n\n".join(parts))
    documents = list(dict.fromkeys(documents))  # drop exact duplicates, keep the first
    random.Random(SHUFFLE_SEED).shuffle(documents)
    return documents


def source_documents() -> list[str]:
    """The standard library's own Python source, one document per file (tests, IDLE and
    site-packages excluded), in sorted path order: ~11 MB of real code and comments."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & (SKIP_PARTS | {"site-packages", "idlelib", "lib2to3", "turtledemo"}):
            continue
        with contextlib.suppress(UnicodeDecodeError, OSError):
            text = path.read_text(encoding="utf-8").strip()
            if text:
                documents.append(text)
    return documents


def stdlib_documents(include_source: bool = False) -> list[str]:
    """The embedded corpus: one document per help topic and per standard-library module;
    with `include_source`, the stdlib's source files too (shuffled in with the same seed)."""
    documents = documents_from_harvest(harvest())
    if include_source:
        documents = documents + source_documents()
        random.Random(SHUFFLE_SEED).shuffle(documents)
    return documents


def corpus_bytes(documents: list[str]) -> int:
    return sum(len(document.encode("utf-8")) for document in documents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", action="store_true", help="print document count and UTF-8 size")
    parser.add_argument("--out", type=Path, help="write the documents as JSON lines ({\"text\": ...})")
    parser.add_argument("--with-source", action="store_true", help="add the stdlib's .py source files")
    args = parser.parse_args(argv)
    if not args.stats and args.out is None:
        parser.error("nothing to do: give --stats and/or --out PATH")
    documents = stdlib_documents(include_source=args.with_source)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as handle:
            for document in documents:
                handle.write(json.dumps({"text": document}, ensure_ascii=False) + "\n")
    if args.stats:
        print(f"documents:{len(documents)} bytes:{corpus_bytes(documents)} python:{sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
