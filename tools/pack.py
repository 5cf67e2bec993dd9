"""Build the packed copy of train_gpt.py that a record ships, and report its size.

Why: the script's bytes count toward the 16,000,000-byte artifact cap, so records ship a
compact, self-extracting copy (minified by python-minifier, brotli-compressed, the raw bytes in a
latin-1 string literal). The packed file is not UTF-8 text: read and copy it as bytes.
The packing itself lives in train_gpt.py (`pack_source`, `code_bytes_of`), so that the code
bytes a training run logs and the file a record ships come from one implementation; this
tool only calls it, writes the file and checks the result.

Usage: python tools/pack.py train_gpt.py -o packed.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def packer():
    """train_gpt's pack_source and code_bytes_of; a clear error when they are missing."""
    import train_gpt

    missing = [name for name in ("pack_source", "code_bytes_of") if not hasattr(train_gpt, name)]
    if missing:
        raise RuntimeError(f"train_gpt.py defines no {', '.join(missing)} (ARTIFACT section); cannot pack")
    return train_gpt.pack_source, train_gpt.code_bytes_of


def pack_file(source_path: Path | str, output_path: Path | str) -> dict:
    """Pack `source_path` into `output_path`; return the sizes and check the packed copy."""
    pack_source, code_bytes_of = packer()
    source_path, output_path = Path(source_path), Path(output_path)
    source = source_path.read_text(encoding="utf-8")
    packed = pack_source(source)
    compile(packed, str(output_path), "exec")  # the wrapper must at least be valid Python
    output_path.write_bytes(packed)
    packed_bytes = output_path.stat().st_size
    if code_bytes_of(output_path) != packed_bytes:
        raise RuntimeError(f"code_bytes_of({output_path}) = {code_bytes_of(output_path)}, "
                           f"but the file has {packed_bytes} bytes")
    return {"source": str(source_path), "output": str(output_path), "source_bytes": len(source.encode()),
            "packed_bytes": packed_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Usage: " + __doc__.split("Usage: ")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the readable script (train_gpt.py)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the packed copy")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} is not a file")
    if args.output.resolve() == args.source.resolve():
        parser.error("the output would overwrite the source; pick another path")
    try:
        sizes = pack_file(args.source, args.output)
    except (RuntimeError, SyntaxError, UnicodeDecodeError, OSError, ImportError) as error:
        print(f"pack.py: error: {error}", file=sys.stderr)
        return 1
    saved = sizes["source_bytes"] - sizes["packed_bytes"]
    print(f"source_bytes:{sizes['source_bytes']} packed_bytes:{sizes['packed_bytes']} saved_bytes:{saved} "
          f"output:{sizes['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
