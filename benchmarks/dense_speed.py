"""Dense retrieval speed and quality: MiniLM encoding, faiss Flat vs HNSW vs IVF-PQ.

    python -m benchmarks.dense_speed --vectors 100000 --encode-passages 2000

Three parts, all measured in one run on this machine:

1. **Encoder** (the real bundled all-MiniLM-L6-v2 on CPU): passages/s encoding a sample
   of ``--encode-passages`` 60-word Zipfian passages (``benchmarks/corpus.py``, about as
   many tokens as a Wikipedia passage) and the synthetic world's short documents; query
   encoding one at a time vs in a batch of 64, which is why the server batches.
2. **Index at scale**: encoding 100k passages would take most of an hour on this CPU,
   so the index comparison uses ``--vectors`` *synthetic* unit vectors of MiniLM's
   dimension (384): ``--clusters`` Gaussian clusters (a point's cosine to its cluster
   centre is about 0.7, so neighbours are close but not trivially separable, loosely like
   topical text embeddings) and queries drawn from the same clusters. Flat (exact) is
   the reference: HNSW (``M=32``, ``efConstruction=200``, our defaults) is timed at
   several ``efSearch`` values with its recall@10 against Flat's exact top 10, and
   IVF-PQ likewise at several ``nprobe``. Queries go in batches of ``--batch``, as the env
   and the server send them; methods run interleaved, best of ``--repeats`` rounds.
3. **Real embeddings on the synthetic world** (3,620 documents, MiniLM-encoded): HNSW
   vs Flat recall@10 on real query embeddings, and the recall@3 of each hop's supporting
   document (the dev/test decompositions' sub-questions, ``#k`` filled in) for BM25,
   dense (Flat) and hybrid (RRF) retrieval.

Results are printed as markdown and written to the ``## Dense retrieval`` section of
``benchmarks/RESULTS.md`` (other sections are left untouched). The machine's 2 CPUs are
shared with other jobs: compare the rows of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np

from benchmarks.results import load_average, publish

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECTION_HEADING = "## Dense retrieval"
DIM = 384


def best_rate(fn: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of ``fn`` (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


# ----------------------------------------------------------------------- 1. encoder
def encoder_rates(args: argparse.Namespace, encoder, world_docs) -> dict[int, dict[str, float]]:
    """Encoding rates per torch thread count (``--torch-threads``)."""
    import torch

    from benchmarks.corpus import sample_queries, zipf_passages

    passages = [d.contents for d in zipf_passages(args.encode_passages, seed=0)]
    world_texts = [d.contents for d in world_docs][: args.encode_passages]
    tokenizer = encoder._model.tokenizer
    tokens = {
        "zipf_tokens": float(np.mean([len(tokenizer(p)["input_ids"]) for p in passages[:500]])),
        "world_tokens": float(np.mean([len(tokenizer(t)["input_ids"]) for t in world_texts[:500]])),
    }
    queries = [q.text for q in sample_queries(zipf_passages(2000, seed=0), 256, seed=2)]
    out = {}
    for threads in args.torch_threads:
        torch.set_num_threads(threads)
        encoder.encode_passages(passages[:64])  # warm up
        rates = dict(tokens)
        rates["zipf_passages_per_s"] = best_rate(
            lambda: encoder.encode_passages(passages), len(passages), 1
        )
        rates["world_passages_per_s"] = best_rate(
            lambda: encoder.encode_passages(world_texts), len(world_texts), 1
        )
        rates["query_single_per_s"] = best_rate(
            lambda: [encoder.encode_queries([q]) for q in queries[:64]], 64, args.repeats
        )
        rates["query_batch64_per_s"] = best_rate(
            lambda: [encoder.encode_queries(queries[i : i + 64]) for i in range(0, 256, 64)],
            256,
            args.repeats,
        )
        print(f"torch threads {threads}: {rates}", flush=True)
        out[threads] = rates
    torch.set_num_threads(min(args.torch_threads))
    return out


# --------------------------------------------------------------- 2. index at scale
def clustered_unit_vectors(
    n: int, clusters: int, seed: int, centres: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``clusters`` random centres (cosine to centre ~0.7)."""
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, len(centres), size=n)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    vectors = (centres[labels] + noise).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, centres


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / (len(exact) * k)


def index_comparison(args: argparse.Namespace) -> dict:
    import faiss

    from research_env.retrievers.faiss_index import build_faiss_index

    corpus, centres = clustered_unit_vectors(args.vectors, args.clusters, seed=0)
    queries, _ = clustered_unit_vectors(args.queries, args.clusters, seed=1, centres=centres)
    batches = [queries[i : i + args.batch] for i in range(0, len(queries), args.batch)]
    k = 10

    def run(index) -> np.ndarray:
        return np.concatenate([index.search(b, k)[1] for b in batches])

    out: dict = {"threads": faiss.omp_get_max_threads()}
    start = time.perf_counter()
    flat = build_faiss_index(corpus, "flat")
    out["flat_build_s"] = time.perf_counter() - start
    exact = run(flat)
    print(f"flat built in {out['flat_build_s']:.1f}s", flush=True)

    start = time.perf_counter()
    hnsw = build_faiss_index(corpus, "hnsw")
    out["hnsw_build_s"] = time.perf_counter() - start
    print(f"hnsw built in {out['hnsw_build_s']:.1f}s", flush=True)

    start = time.perf_counter()
    ivf = build_faiss_index(corpus, "ivfpq")
    out["ivfpq_build_s"] = time.perf_counter() - start
    out["ivfpq_nlist"] = ivf.nlist
    print(f"ivfpq built in {out['ivfpq_build_s']:.1f}s", flush=True)

    settings: list[tuple[str, Callable[[], None]]] = [("flat", lambda: None)]
    settings += [(f"hnsw ef={ef}", _setter(hnsw.hnsw, "efSearch", ef)) for ef in args.ef_search]
    settings += [(f"ivfpq nprobe={p}", _setter(ivf, "nprobe", p)) for p in args.nprobe]
    indexes = {"flat": flat, "hnsw": hnsw, "ivfpq": ivf}
    rows = {name: {"rate": 0.0} for name, _ in settings}
    for _ in range(args.repeats):  # interleaved rounds: load bursts hit every method
        for name, configure in settings:
            configure()
            index = indexes[name.split()[0]]
            start = time.perf_counter()
            found = run(index)
            rate = len(queries) / (time.perf_counter() - start)
            rows[name]["rate"] = max(rows[name]["rate"], rate)
            rows[name]["recall"] = recall_at(found, exact)
    out["rows"] = rows
    out["index_mb"] = {
        "flat": corpus.nbytes / 2**20,
        "hnsw": faiss.serialize_index(hnsw).nbytes / 2**20,
        "ivfpq": faiss.serialize_index(ivf).nbytes / 2**20,
    }
    return out


def _setter(obj, attribute: str, value: int) -> Callable[[], None]:
    return lambda: setattr(obj, attribute, value)


# ---------------------------------------------------------- 3. synthetic-world quality
def hop_queries(samples) -> tuple[list[str], list[str]]:
    """(sub-question with #k filled in, supporting doc id) for every hop."""
    queries, targets = [], []
    for sample in samples:
        steps = sample.metadata.get("decomposition", [])
        answers: list[str] = []
        for step in steps:
            question = step["question"]
            for i, answer in enumerate(answers, start=1):
                question = question.replace(f"#{i}", answer)
            answers.append(step["answer"])
            if step.get("doc_id"):
                queries.append(question)
                targets.append(step["doc_id"])
    return queries, targets


def world_quality(args: argparse.Namespace, encoder, world) -> dict:
    from research_env.retrievers.bm25 import BM25Retriever
    from research_env.retrievers.dense import DenseRetriever
    from research_env.retrievers.hybrid import HybridRetriever

    docs = world.corpus
    queries, targets = hop_queries(world.splits["dev"] + world.splits["test"])
    embeddings = encoder.encode_passages([d.contents for d in docs])
    flat = DenseRetriever.build(docs, encoder, "flat", embeddings=embeddings)
    hnsw = DenseRetriever.build(docs, encoder, "hnsw", embeddings=embeddings)
    q_vectors = encoder.encode_queries(queries)
    exact = flat.search_vectors(q_vectors, 10)[1]
    approx = hnsw.search_vectors(q_vectors, 10)[1]
    bm25 = BM25Retriever.build(docs)
    retrievers = {"BM25": bm25, "dense (MiniLM, flat)": flat, "hybrid (RRF)": None}
    retrievers["hybrid (RRF)"] = HybridRetriever([bm25, flat])
    samples = world.splits["dev"] + world.splits["test"]
    questions = [s.question for s in samples]
    supporting = [set(s.metadata.get("supporting_doc_ids", [])) for s in samples]
    hop_recall, question_recall = {}, {}
    for name, retriever in retrievers.items():
        results = retriever.search(queries, 3)
        found = [{h.document.id for h in hits} for hits in results]
        hop_recall[name] = float(np.mean([t in f for f, t in zip(found, targets, strict=True)]))
        results = retriever.search(questions, 5)
        found = [{h.document.id for h in hits} for hits in results]
        question_recall[name] = float(
            np.mean([len(f & s) / len(s) for f, s in zip(found, supporting, strict=True) if s])
        )
    return {
        "documents": len(docs),
        "hops": len(queries),
        "questions": len(questions),
        "hnsw_recall10": recall_at(approx, exact),
        "hop_recall3": hop_recall,
        "question_recall5": question_recall,
    }


# ---------------------------------------------------------------------------- report
def markdown(args, enc: dict, scale: dict, world: dict) -> str:
    lines = [
        SECTION_HEADING,
        "",
        f"Command: `python -m benchmarks.dense_speed --vectors {args.vectors} "
        f"--encode-passages {args.encode_passages}` ({dt.date.today().isoformat()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other agents' jobs; "
        f"faiss with {scale['threads']} OpenMP threads, torch on CPU; load average at "
        f"start {args.load_at_start}).",
        "",
        "**Encoder** (bundled all-MiniLM-L6-v2, 384 dims, batch 64), per torch thread count:",
        "",
        "| torch threads | Zipfian 60-word passages/s | synthetic-world docs/s "
        "| queries/s one at a time | queries/s in batches of 64 | batching gain |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for threads, r in enc.items():
        lines.append(
            f"| {threads} | {r['zipf_passages_per_s']:,.0f} | {r['world_passages_per_s']:,.0f} | "
            f"{r['query_single_per_s']:,.0f} | {r['query_batch64_per_s']:,.0f} | "
            f"{r['query_batch64_per_s'] / r['query_single_per_s']:.1f}x |"
        )
    first = next(iter(enc.values()))
    fastest = max(r["zipf_passages_per_s"] for r in enc.values())
    lines += [
        "",
        f"Mean tokens: {first['zipf_tokens']:.0f} per Zipfian passage (about a Wikipedia "
        f"passage), {first['world_tokens']:.0f} per synthetic-world document; "
        f"{args.encode_passages:,} of each encoded. Batching queries is where dense "
        "retrieval gains most, hence the server's micro-batching. At the best passage rate, "
        f"encoding 100k passages takes about {100_000 / fastest / 60:.0f} minutes here "
        "(21M Wikipedia passages need a GPU). With other processes busy on the 2 CPUs, "
        "torch's 2-thread pool waits on its threads; `SentenceEncoder(num_threads=1)` "
        "(`research-env serve --torch-threads 1`) avoids that.",
        "",
        f"**Index at scale**: {args.vectors:,} *synthetic* unit vectors (384 dims, "
        f"{args.clusters:,} Gaussian clusters, cosine to centre ~0.7; not real embeddings, "
        f"see the module docstring), {args.queries:,} queries from the same clusters in "
        f"batches of {args.batch}, top 10. Recall@10 is against Flat's exact top 10.",
        "",
        "| index | search q/s | speed-up vs flat | recall@10 |",
        "|:---|---:|---:|---:|",
    ]
    flat_rate = scale["rows"]["flat"]["rate"]
    for name, row in scale["rows"].items():
        lines.append(
            f"| {name} | {row['rate']:,.0f} | {row['rate'] / flat_rate:.1f}x | "
            f"{row['recall']:.3f} |"
        )
    mb = scale["index_mb"]
    lines += [
        "",
        f"Build: flat {scale['flat_build_s']:.1f} s, HNSW (M=32, efConstruction=200) "
        f"{scale['hnsw_build_s']:.0f} s, IVF-PQ ({scale['ivfpq_nlist']} lists, 96 x 8-bit "
        f"codes) {scale['ivfpq_build_s']:.0f} s. Size: flat {mb['flat']:.0f} MB, HNSW "
        f"{mb['hnsw']:.0f} MB, IVF-PQ {mb['ivfpq']:.0f} MB. HNSW's default efSearch is "
        "64. IVF-PQ's recall is bounded by its compressed codes (more `nprobe` does not "
        "help): it is for corpora whose float vectors do not fit in memory.",
        "",
        f"**Real embeddings, synthetic world** ({world['documents']:,} documents): HNSW "
        f"recall@10 vs Flat on MiniLM embeddings of {world['hops']:,} sub-questions "
        f"{world['hnsw_recall10']:.3f}. Retrieval quality on dev+test:",
        "",
        "| retriever | hop sub-question: recall@3 of its document | full question: "
        "recall@5 of the supporting documents |",
        "|:---|---:|---:|",
    ]
    for name in world["hop_recall3"]:
        lines.append(
            f"| {name} | {world['hop_recall3'][name]:.3f} | {world['question_recall5'][name]:.3f} |"
        )
    lines += [
        "",
        f"Sub-questions ({world['hops']:,}) name the entity they ask about. Whole multi-hop "
        f"questions ({world['questions']}) name only the first hop's entity, so the later "
        "hops' documents cannot be found from the question alone: the agent has to search "
        "step by step.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dense_speed",
        description="MiniLM encoding speed; faiss Flat vs HNSW vs IVF-PQ speed and recall.",
    )
    parser.add_argument("--vectors", type=int, default=100_000, help="synthetic index size")
    parser.add_argument("--clusters", type=int, default=1_000, help="clusters of the vectors")
    parser.add_argument("--queries", type=int, default=2_000, help="queries for the index")
    parser.add_argument("--batch", type=int, default=64, help="queries per search call")
    parser.add_argument("--encode-passages", type=int, default=2_000, help="encoder sample")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument(
        "--torch-threads", type=int, nargs="+", default=[1, 2], help="encoder thread counts"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from research_env.data.synthetic import generate
    from research_env.retrievers.encoders import SentenceEncoder

    args = parse_args(argv)
    args.load_at_start = load_average()
    encoder = SentenceEncoder()
    world = generate()
    print("encoder ...", flush=True)
    enc = encoder_rates(args, encoder, world.corpus)
    print("synthetic world ...", flush=True)
    quality = world_quality(args, encoder, world)
    print(quality, flush=True)
    print(f"index comparison at {args.vectors:,} vectors ...", flush=True)
    scale = index_comparison(args)
    section = markdown(args, enc, scale, quality)
    publish(section, write=not args.no_write)


if __name__ == "__main__":
    main()
