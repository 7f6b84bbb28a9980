"""``research-env data``: make and inspect QA datasets and corpora.

Left whole at ~420 lines on purpose: it is one idea, the argument surface of a single
command (much of it help text and examples), whose four actions share one parser helper
and one SOURCE help; split, one command's ``--help`` would be scattered over files. The
work itself lives in ``research_env.data``.

Actions are sub-subcommands, each a small ``_add_<action>`` + handler pair: ``synth``,
``show``, ``convert`` (original releases -> FlashRAG jsonl + closed corpus) and ``stats``.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from itertools import islice
from pathlib import Path
from typing import Any

SYNTH_EPILOG = """\
Writes corpus.jsonl, train.jsonl, dev.jsonl, test.jsonl (FlashRAG shape) and world.json
(the config) into DIR. The same options always give byte-identical files.

examples:
  research-env data synth --out data/synth-small --n-questions 500 --n-people 400
  research-env data synth --out data/deep --hop-weights 3:1,4:1
"""

SHOW_EPILOG = """\
SOURCE is a QA or corpus jsonl file (the kind is detected from the first record), an
original HotpotQA/MuSiQue/2Wiki/Bamboogle file, a directory holding <split>.jsonl, or a
dataset name such as 'synthetic'.

examples:
  research-env data show synthetic --split dev --n 3
  research-env data show data/synth-small/corpus.jsonl --n 2
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data",
        help="generate and inspect QA datasets and corpora",
        description="Generate the synthetic multi-hop world; convert the original releases "
        "of HotpotQA, MuSiQue, 2WikiMultiHopQA and Bamboogle to FlashRAG jsonl with a "
        "closed corpus; inspect and summarize QA files.",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _print_help(parser))
    _add_synth(actions)
    _add_show(actions)
    _add_convert(actions)
    _add_stats(actions)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _action(
    actions: Any, name: str, handler: Any, *, help: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A ``research-env data NAME`` parser whose epilog (examples) keeps its line breaks."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


# --------------------------------------------------------------------------- synth

# The world's size knobs: SyntheticConfig.n_<size>, each a --n-<size> option.
SYNTH_SIZES = ("questions", "people", "cities", "countries", "orgs", "works")


def _parse_hop_weights(text: str) -> dict[int, float]:
    """``"1:0.3,2:0.35,3:0.2,4:0.15"`` -> ``{1: 0.3, 2: 0.35, 3: 0.2, 4: 0.15}``."""
    weights: dict[int, float] = {}
    try:
        for item in text.split(","):
            hops, _, weight = item.partition(":")
            weights[int(hops)] = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HOPS:WEIGHT pairs like '1:0.3,2:0.7', got {text!r}"
        ) from None
    return weights


def _add_synth(actions: Any) -> None:
    from research_env.data.synthetic import SyntheticConfig

    default = SyntheticConfig()
    parser = _action(
        actions,
        "synth",
        run_synth,
        help="write a seeded synthetic multi-hop QA world",
        description="Generate a contamination-free multi-hop QA world: invented people, "
        "places, organisations and works, one document per entity, and questions of 1-4 "
        "hops with their decompositions.",
        epilog=SYNTH_EPILOG,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=default.seed, help="world seed (default: 0)")
    for size in SYNTH_SIZES:
        value = getattr(default, f"n_{size}")
        parser.add_argument(
            f"--n-{size}", type=int, default=value, metavar="N", help=f"default: {value}"
        )
    hop_text = ",".join(f"{k}:{v}" for k, v in sorted(default.hop_weights.items()))
    parser.add_argument(
        "--hop-weights",
        type=_parse_hop_weights,
        default=default.hop_weights,
        metavar="H:W,...",
        help=f"share of questions per hop count (default: {hop_text})",
    )
    parser.add_argument(
        "--near-miss",
        type=float,
        default=default.near_miss_fraction,
        metavar="F",
        help="fraction of entities named after another one, as retrieval distractors "
        f"(default: {default.near_miss_fraction})",
    )


def run_synth(args: argparse.Namespace) -> int:
    from research_env.data.synthetic import SyntheticConfig, generate, write_world

    config = SyntheticConfig(
        seed=args.seed,
        hop_weights=args.hop_weights,
        near_miss_fraction=args.near_miss,
        **{f"n_{size}": getattr(args, f"n_{size}") for size in SYNTH_SIZES},
    )
    start = time.perf_counter()
    world = generate(config)
    out = write_world(world, args.out)
    seconds = time.perf_counter() - start
    sizes = ", ".join(f"{split} {len(samples)}" for split, samples in world.splits.items())
    print(f"wrote {out}: {len(world.corpus)} documents; questions: {sizes} ({seconds:.2f} s)")
    return 0


# --------------------------------------------------------------------------- show


def _add_show(actions: Any) -> None:
    parser = _action(
        actions,
        "show",
        run_show,
        help="pretty-print the first records of a QA or corpus file",
        description="Print records of a QA split or a corpus in readable form.",
        epilog=SHOW_EPILOG,
    )
    parser.add_argument("source", metavar="SOURCE", help="jsonl file, directory or dataset name")
    parser.add_argument("--n", type=int, default=5, help="how many records (default: 5)")
    parser.add_argument("--skip", type=int, default=0, help="records to skip first (default: 0)")
    parser.add_argument(
        "--split", default="train", help="split, for a directory or dataset name (default: train)"
    )


def _format_sample(sample: Any) -> str:
    meta = sample.metadata
    head = f"[{sample.id}]"
    if "type" in meta or "hops" in meta:
        head += f" {meta.get('type', '?')}, {meta.get('hops', '?')} hop(s)"
    lines = [head, f"  Q: {sample.question}", f"  A: {' | '.join(sample.golden_answers)}"]
    for number, step in enumerate(meta.get("decomposition") or [], start=1):
        where = f"  [{step['doc_id']}]" if step.get("doc_id") else ""
        lines.append(f"    {number}. {step.get('question')} -> {step.get('answer')}{where}")
    return "\n".join(lines)


def _format_document(doc: Any) -> str:
    body = textwrap.fill(doc.text, width=88, initial_indent="  ", subsequent_indent="  ")
    return f"[{doc.id}] {doc.title}\n{body}"


def run_show(args: argparse.Namespace) -> int:
    from research_env import data
    from research_env.data.jsonl import (
        DataFormatError,
        document_from_json,
        iter_jsonl,
        qa_sample_from_json,
    )

    path = Path(args.source)
    if args.source in data.DATASETS or path.is_dir():
        samples = data.load_split(args.source, args.split)
        for sample in samples[args.skip : args.skip + args.n]:
            print(_format_sample(sample), end="\n\n")
        return 0
    if not path.is_file():
        raise ValueError(
            f"{args.source!r} is not a file, a directory or a dataset name "
            f"({', '.join(sorted(data.DATASETS))})"
        )
    from research_env.data import formats
    from research_env.data.formats._files import container_of

    first = formats.peek_first(path)
    release = formats.format_of_record(first)
    sheet = container_of(path) in ("csv", "tsv")  # rows of cells, with or without a header
    if sheet or release not in (None, "flashrag"):  # an original release file: parse it whole
        samples = formats.read_records(path).samples
        for sample in samples[args.skip : args.skip + args.n]:
            print(_format_sample(sample), end="\n\n")
        return 0
    # Read lazily: a corpus can be gigabytes and we only print a few records.
    is_qa: bool | None = None
    for line_no, obj in islice(iter_jsonl(path), args.skip, args.skip + args.n):
        if is_qa is None:
            is_qa = isinstance(obj, dict) and "question" in obj
        try:
            record = qa_sample_from_json(obj) if is_qa else document_from_json(obj)
        except ValueError as err:
            raise DataFormatError(path, line_no, str(err)) from None
        print(_format_sample(record) if is_qa else _format_document(record), end="\n\n")
    return 0


# --------------------------------------------------------------------------- convert

SOURCE_HELP = """\
SOURCE is a dataset file in its original release format (HotpotQA .json, MuSiQue
.jsonl, 2WikiMultiHopQA .json, Bamboogle .csv/.tsv/.json, FlashRAG .jsonl; .gz too), a
directory (holding <split>.jsonl, a release file whose name has the split, or a
dataset saved with Hugging Face datasets' save_to_disk or as parquet files), or
hf:NAME[:CONFIG] to load from the Hugging Face hub (needs internet and the 'datasets'
package).
"""

CONVERT_EPILOG = (
    SOURCE_HELP
    + """
Writes DIR/<split>.jsonl in FlashRAG shape (id, question, golden_answers, metadata with
hops, type, supporting_doc_ids and, for MuSiQue/2Wiki, decomposition). When the source
ships paragraphs (HotpotQA distractor, MuSiQue, 2Wiki) they are deduplicated into
DIR/corpus.jsonl ("Title"\\ntext contents, ids hashed from title+text); an existing
corpus.jsonl is merged, so convert train and dev into the same DIR. Then:

  gym.make("ReSearch-MultiHop-v0", dataset="DIR", split="dev")   # BM25 over corpus.jsonl

examples:
  research-env data convert hotpot_dev_distractor_v1.json --out data/hotpotqa
  research-env data convert musique_ans_v1.0_train.jsonl --out data/musique
  research-env data convert dev.json --format 2wiki --out data/2wiki
  research-env data convert bamboogle.csv --split test --out data/bamboogle
  research-env data convert hf:hotpotqa/hotpot_qa:distractor --split validation --out data/hq
"""
)

STATS_EPILOG = (
    SOURCE_HELP
    + """SOURCE may also be a dataset name such as 'synthetic'.

Prints the number of questions, golden answers per question, answer types (yes/no,
date, numeric, span), the hop distribution, question types (and HotpotQA levels), how
many questions list supporting documents or a decomposition and, when a corpus.jsonl
travels with the split, how many supporting ids it contains.

examples:
  research-env data stats hotpot_dev_distractor_v1.json
  research-env data stats data/musique --split dev
  research-env data stats synthetic --split test --json
"""
)


def _add_source_options(parser: argparse.ArgumentParser, split_help: str) -> None:
    from research_env.data.formats import FORMAT_CHOICES

    parser.add_argument("source", metavar="SOURCE", help="dataset file, directory or name")
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default="auto",
        help="release format of SOURCE (default: auto, from the extension and the first "
        "record's keys)",
    )
    parser.add_argument("--split", default=None, metavar="NAME", help=split_help)
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="on a malformed record: stop with its file, line and field (raise, default) "
        "or leave it out and report how many were skipped (skip)",
    )
    parser.add_argument(
        "--config", default=None, metavar="NAME", help="hub dataset config (hf: sources only)"
    )


def _add_convert(actions: Any) -> None:
    parser = _action(
        actions,
        "convert",
        run_convert,
        help="convert a HotpotQA/MuSiQue/2Wiki/Bamboogle file to FlashRAG jsonl + corpus",
        description="Convert a QA dataset in its original release format to FlashRAG jsonl, "
        "building a closed corpus from the paragraphs it ships.",
        epilog=CONVERT_EPILOG,
    )
    _add_source_options(
        parser,
        "name of the split to write, DIR/NAME.jsonl (default: the split in SOURCE's file "
        "name, e.g. 'dev' for hotpot_dev_distractor_v1.json; needed for directories and hf:)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")


def _print_skipped(errors: list[Any], limit: int = 5) -> None:
    for error in errors[:limit]:
        print(f"  skipped: {error}")
    if len(errors) > limit:
        print(f"  ... and {len(errors) - limit} more")


def run_convert(args: argparse.Namespace) -> int:
    import warnings

    from research_env.data.closed_corpus import convert

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped records are listed below instead
        report = convert(
            _source(args.source),
            args.out,
            split=args.split,
            format=args.format,
            on_error=args.on_error,
            config=args.config,
        )
    print(report.summary() + f" ({time.perf_counter() - start:.2f} s)")
    _print_skipped(report.errors)
    return 0


def _source(text: str) -> str:
    """Named datasets (``synthetic``) are read through their own loader, not a file."""
    from research_env import data

    if text in data.DATASETS:
        raise ValueError(
            f"{text!r} is a named dataset, already in FlashRAG shape; nothing to convert"
        )
    return text


# --------------------------------------------------------------------------- stats


def _add_stats(actions: Any) -> None:
    parser = _action(
        actions,
        "stats",
        run_stats,
        help="count questions, answer types, hops and question types of a split",
        description="Summarize a QA split: counts, answer types, hops, question types and "
        "supporting documents.",
        epilog=STATS_EPILOG,
    )
    _add_source_options(
        parser,
        "split to read, for a directory, a dataset name or hf: (default: train for names, "
        "the split in the file name otherwise)",
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def run_stats(args: argparse.Namespace) -> int:
    import json
    import warnings

    from research_env import data
    from research_env.data.stats import dataset_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skip count is printed in the stats
        source = args.source
        if args.config and source.startswith("hf:") and source.count(":") == 1:
            source += f":{args.config}"
        samples = data.load_split(
            source, args.split or "train", format=args.format, on_error=args.on_error
        )
    corpus_file = _travelling_corpus(args.source)
    corpus_ids = None
    if corpus_file is not None:
        corpus_ids = {doc.id for doc in data.read_corpus_jsonl(corpus_file)}
    skipped = getattr(samples, "skipped", 0)
    stats = dataset_stats(samples, corpus_ids, skipped=skipped)
    if args.json:
        print(json.dumps(stats.to_json(), indent=2, ensure_ascii=False))
    else:
        where = args.source + (f" [{args.split}]" if args.split else "")
        print(stats.render(where))
        _print_skipped(getattr(samples, "errors", []))
    return 0


def _travelling_corpus(source: str) -> Path | None:
    """The corpus.jsonl of a named dataset or beside a file / in a directory; never one
    built on the fly (stats only reads)."""
    from research_env import data

    if source in data.DATASETS:
        return data.corpus_path(source)
    path = Path(source)
    if not path.exists():
        return None
    candidate = (path if path.is_dir() else path.parent) / "corpus.jsonl"
    return candidate if candidate.exists() else None
