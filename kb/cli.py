"""`kgverify kb build|info|search`: the knowledge-base commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.pipeline.types import RetrievalMode


def add_parser(subparsers) -> None:
    kb = subparsers.add_parser("kb", help="build, inspect and search knowledge bases")
    sub = kb.add_subparsers(dest="kb_command", required=True)

    build = sub.add_parser("build", help="build a KB directory from documents")
    build.add_argument("--input", nargs="+", required=True, type=Path, help="JSONL(.gz) or text files or directories")
    build.add_argument("--output", required=True, type=Path, help="KB directory to write (replaced atomically)")
    build.add_argument("--text-field", default="text")
    build.add_argument("--id-field", default="id")
    build.add_argument("--source-field", default="source")
    build.add_argument("--title-field", default="title")
    build.add_argument("--chunk-chars", type=int, default=500, help="maximum characters per fact")
    build.add_argument("--embedder", default=None, help="embedding model (default: KGV_EMBEDDER__MODEL)")
    build.set_defaults(func=_build)

    info = sub.add_parser("info", help="print a KB's manifest")
    info.add_argument("directory", type=Path)
    info.set_defaults(func=_info)

    search = sub.add_parser("search", help="search a KB")
    search.add_argument("directory", type=Path)
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--mode", choices=[m.value for m in RetrievalMode], default="dense")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.set_defaults(func=_search)


def _embedder(name: str | None):
    from kb.embedder import SentenceTransformerEmbedder
    from server.config import Settings

    cfg = Settings().embedder
    return SentenceTransformerEmbedder(name or cfg.model, cfg.device, cfg.batch_size)


def _build(args: argparse.Namespace) -> int:
    from kb.build import build_kb
    from kb.ingest import FieldMap, read_documents

    fields = FieldMap(args.text_field, args.id_field, args.source_field, args.title_field)
    manifest = build_kb(read_documents(args.input, fields), args.output, _embedder(args.embedder),
                        chunk_chars=args.chunk_chars, build_options={"inputs": [str(p) for p in args.input]})
    print(f"built {manifest.kb_id}: {manifest.num_facts} facts from {manifest.num_documents} documents "
          f"in {args.output}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from kb.manifest import Manifest

    manifest = Manifest.load(args.directory)
    data = json.loads(manifest.to_json())
    data["checksum"] = manifest.checksum()
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _search(args: argparse.Namespace) -> int:
    from kb.knowledge_base import FaissKnowledgeBase
    from kb.manifest import Manifest

    manifest = Manifest.load(args.directory)
    kb = FaissKnowledgeBase.load(args.directory, _embedder(manifest.embedder))
    hits = kb.search([args.query], args.k, RetrievalMode(args.mode))[0]
    rows = [{"fact_id": h.fact_id, "text": h.text, "source": h.source, "title": h.title, "score": h.score}
            for h in hits]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        for rank, row in enumerate(rows, 1):
            print(f"{rank:2d}. [{row['score']:.3f}] {row['fact_id']}: {row['text']}")
    return 0
