"""Dense retrieval with the real (bundled, offline) MiniLM, and hybrid RRF fusion."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from world import SAMPLES

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit
from research_env.retrievers.hybrid import HybridRetriever, reciprocal_rank_fusion

pytestmark = pytest.mark.slow  # loads the real MiniLM encoder (~10 s on 2 CPUs)

FACTS = [
    "Paris is the capital and largest city of France.",
    "The Nile is the longest river in Africa.",
    "Photosynthesis lets plants turn sunlight into chemical energy.",
    "Mount Everest is the highest mountain above sea level.",
    "The violin is a string instrument played with a bow.",
    "Penguins are flightless birds living in the Southern Hemisphere.",
    "Python is a programming language created by Guido van Rossum.",
    "The Great Wall of China stretches thousands of kilometres.",
    "Honey bees make honey from the nectar of flowers.",
    "The Moon orbits the Earth about once every 27 days.",
    "Chess is a board game for two players on a checkered board.",
    "Coffee is brewed from roasted coffee beans.",
    "The Amazon rainforest covers much of the Amazon basin in South America.",
    "Beethoven composed nine symphonies.",
    "Volcanoes erupt molten rock called lava.",
    "The heart pumps blood through the circulatory system.",
    "Tokyo is the capital of Japan.",
    "Shakespeare wrote the tragedy Hamlet.",
    "Rain forms when water vapour condenses into droplets.",
    "Bicycles are pedal-driven vehicles with two wheels.",
    "Brisa Telk is an engineer who founded Quimby Forge.",
    "Quimby Forge is headquartered in Ostravel.",
    "Ostravel is a port city in Quesland.",
    "Tamsy Orr wrote The Glass Tide.",
]
DOCS = [Document(f"f{i}", f'"Fact {i}"\n{text}') for i, text in enumerate(FACTS)]

# Paraphrases sharing few words with their answer: what dense retrieval is for.
PARAPHRASES = {
    "Which city is France's seat of government?": "f0",
    "longest African river": "f1",
    "tallest peak on the planet": "f3",
    "birds of Antarctica that cannot fly": "f5",
    "who came up with the Python language": "f6",
    "insects producing a sweet food": "f8",
}


@pytest.fixture(scope="module")
def encoder():
    from research_env.retrievers.encoders import SentenceEncoder

    return SentenceEncoder()


@pytest.fixture(scope="module")
def flat(encoder):
    from research_env.retrievers.dense import DenseRetriever

    return DenseRetriever.build(DOCS, encoder, "flat", show_progress=False)


def top_ids(results):
    return [[h.document.id for h in hits] for hits in results]


# ---------------------------------------------------------------------------- dense
def test_paraphrased_questions_find_their_passage(flat):
    results = flat.search(list(PARAPHRASES), 1)
    assert top_ids(results) == [[doc] for doc in PARAPHRASES.values()]


def test_scores_are_cosine_similarities(flat, encoder):
    query = "tallest peak on the planet"
    hits = flat.search([query], 3)[0]
    q = encoder.encode_queries([query])[0]
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
    for hit in hits:
        d = encoder.encode_passages([hit.document.contents])[0]
        assert hit.score == pytest.approx(float(q @ d), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_batch_search_equals_one_query_at_a_time(flat):
    queries = list(PARAPHRASES)
    batched = flat.search(queries, 4)
    single = [flat.search([q], 4)[0] for q in queries]
    assert top_ids(batched) == top_ids(single)
    for b, s in zip(batched, single, strict=True):
        assert [h.score for h in b] == pytest.approx([h.score for h in s], abs=1e-5)


def test_edge_sizes_of_k_and_batches(flat):
    assert flat.search([], 3) == []
    assert flat.search(["anything"], 0) == [[]]
    assert len(flat.search(["anything"], 1000)[0]) == len(DOCS)
    with pytest.raises(ValueError):
        flat.search(["q"], -1)


def test_hnsw_agrees_with_flat_on_a_small_corpus(flat, encoder):
    from research_env.retrievers.dense import DenseRetriever

    hnsw = DenseRetriever.build(DOCS, encoder, "hnsw", show_progress=False, hnsw_m=8)
    queries = [*PARAPHRASES, "a musical instrument", "Japanese capital", "who wrote Hamlet"]
    assert top_ids(hnsw.search(queries, 5)) == top_ids(flat.search(queries, 5))
    assert hnsw.ef_search == 64
    hnsw.ef_search = 16
    assert hnsw.index.hnsw.efSearch == 16
    with pytest.raises(ValueError, match="hnsw"):
        flat.ef_search = 8


def test_precomputed_embeddings_skip_encoding(flat, encoder):
    from research_env.retrievers.dense import DenseRetriever

    vectors = encoder.encode_passages([d.contents for d in DOCS])
    again = DenseRetriever.build(DOCS, encoder, "flat", embeddings=vectors)
    assert top_ids(again.search(list(PARAPHRASES), 3)) == top_ids(flat.search(list(PARAPHRASES), 3))
    with pytest.raises(ValueError, match="embeddings"):
        DenseRetriever.build(DOCS, encoder, "flat", embeddings=vectors[:3])


def test_ivfpq_refuses_a_corpus_too_small_to_train(encoder):
    from research_env.retrievers.dense import DenseRetriever

    with pytest.raises(ValueError, match="use index='flat'"):
        DenseRetriever.build(DOCS, encoder, "ivfpq", show_progress=False)


def test_ivfpq_on_enough_vectors_finds_exact_duplicates():
    from research_env.retrievers.faiss_index import build_faiss_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_faiss_index(vectors, "ivfpq", nlist=16, pq_m=8, nprobe=16)
    _, ids = index.search(vectors[:50], 5)
    # Compressed codes lose some precision, but a vector's own code stays near the top.
    assert np.mean([i in row for i, row in enumerate(ids)]) >= 0.9


def test_unknown_index_kind_is_rejected(encoder):
    from research_env.retrievers.dense import DenseRetriever

    with pytest.raises(ValueError, match="index must be one of"):
        DenseRetriever.build(DOCS, encoder, "annoy")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_and_load_round_trip(tmp_path, encoder, kind):
    from research_env.retrievers.dense import DenseRetriever

    built = DenseRetriever.build(DOCS, encoder, kind, show_progress=False)
    built.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "research_env_dense.json").read_text())
    assert (meta["index"], meta["dim"], meta["num_documents"]) == (kind, 384, len(DOCS))
    assert meta["encoder"]["model"] == "all-MiniLM-L6-v2"

    for mmap in (True, False):
        loaded = DenseRetriever.load(tmp_path / "index", mmap=mmap)  # encoder from config
        queries = list(PARAPHRASES)
        assert top_ids(loaded.search(queries, 3)) == top_ids(built.search(queries, 3))
        assert loaded.document(5) == DOCS[5]
    with pytest.raises(FileNotFoundError):
        DenseRetriever.load(tmp_path)


def test_prefixes_are_prepended(encoder):
    from research_env.retrievers.encoders import SentenceEncoder

    assert (encoder.query_prefix, encoder.passage_prefix) == ("", "")
    e5_style = SentenceEncoder(query_prefix="query: ", passage_prefix="passage: ")
    assert np.allclose(
        e5_style.encode_queries(["rivers"]), encoder.encode_queries(["query: rivers"])
    )
    assert np.allclose(
        e5_style.encode_passages(["rivers"]), encoder.encode_passages(["passage: rivers"])
    )
    assert e5_style.config()["query_prefix"] == "query: "


def test_dense_for_corpus_caches_on_disk_and_in_process(tmp_path, monkeypatch):
    from research_env.retrievers import dense

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in DOCS)
    )
    cache = tmp_path / "cache"
    first = dense.dense_for_corpus(corpus, cache, show_progress=False)
    assert dense.dense_for_corpus(corpus, cache, show_progress=False) is first
    assert len(list(cache.glob("dense-*"))) == 1

    dense.clear_dense_cache()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the disk cache should have been used")

    monkeypatch.setattr(dense.DenseRetriever, "build", no_rebuild)
    again = dense.dense_for_corpus(corpus, cache, show_progress=False)
    assert again is not first
    assert top_ids(again.search(list(PARAPHRASES), 2)) == top_ids(
        first.search(list(PARAPHRASES), 2)
    )
    dense.clear_dense_cache()


def test_dense_factory_builds_from_a_corpus_path(tmp_path):
    from research_env.retrievers import dense

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in DOCS)
    )
    retriever = dense.dense_factory(corpus, cache_dir=tmp_path, index="hnsw", show_progress=False)
    assert retriever.kind == "hnsw"
    assert (tmp_path / "dense").is_dir()
    dense.clear_dense_cache()


def test_importing_the_retrievers_does_not_import_torch():
    code = (
        "import sys, research_env, research_env.retrievers.dense, research_env.retrievers.hybrid,"
        " research_env.retrievers.http, research_env.retrievers.cache;"
        " print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- hybrid
class FixedRetriever:
    """Returns the same ranking for every query; records the k it was asked for."""

    def __init__(self, ids):
        self.ids = ids
        self.asked: list[int] = []

    def search(self, queries, k):
        self.asked.append(k)
        return [
            [SearchHit(Document(i, i.upper()), 100.0 - r) for r, i in enumerate(self.ids[:k])]
            for _ in queries
        ]


def test_rrf_scores_match_the_formula_by_hand():
    lexical = FixedRetriever(["a", "b", "c"])
    semantic = FixedRetriever(["c", "a", "d"])
    hybrid = HybridRetriever([lexical, semantic])
    hits = hybrid.search(["q1", "q2"], 4)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    expected = [("a", 1 / 61 + 1 / 62), ("c", 1 / 63 + 1 / 61), ("b", 1 / 62), ("d", 1 / 63)]
    for per_query in hits:
        assert [h.document.id for h in per_query] == [i for i, _ in expected]
        assert [h.score for h in per_query] == pytest.approx([s for _, s in expected])
    assert per_query[0].document.contents == "A"
    # Each retriever was asked once for a pool of max(4k, 20) candidates.
    assert lexical.asked == semantic.asked == [20]


def test_rrf_weights_and_constant():
    rankings = [
        [SearchHit(Document(i, i), 0.0) for i in ["a", "b", "c"]],
        [SearchHit(Document(i, i), 0.0) for i in ["c", "a", "d"]],
    ]
    fused = reciprocal_rank_fusion(rankings, 2, rrf_k=0, weights=[2.0, 1.0])
    # k=0: a: 2/1 + 1/2 = 2.5, c: 2/3 + 1/1 = 1.667, b: 2/2 = 1.0, d: 1/3
    assert [(h.document.id, round(h.score, 3)) for h in fused] == [("a", 2.5), ("c", 1.667)]


def test_rrf_ties_keep_first_seen_order_and_duplicates_count_once():
    rankings = [
        [SearchHit(Document("x", "x"), 0.0), SearchHit(Document("x", "x"), 0.0)],
        [SearchHit(Document("y", "y"), 0.0)],
    ]
    fused = reciprocal_rank_fusion(rankings, 5)
    assert [(h.document.id, h.score) for h in fused] == [("x", 1 / 61), ("y", 1 / 61)]


def test_hybrid_validates_its_arguments():
    one = FixedRetriever(["a"])
    with pytest.raises(ValueError, match="two or more"):
        HybridRetriever([one])
    with pytest.raises(ValueError, match="weights"):
        HybridRetriever([one, one], weights=[1.0])
    hybrid = HybridRetriever([one, one], pool_size=7)
    assert hybrid.candidate_pool(3) == 7
    assert hybrid.candidate_pool(10) == 10
    assert hybrid.search([], 3) == []


def test_hybrid_of_bm25_and_dense_finds_lexical_and_semantic_matches(flat):
    from research_env.retrievers.bm25 import BM25Retriever

    hybrid = HybridRetriever([BM25Retriever.build(DOCS), flat])
    results = hybrid.search(["Quimby Forge", "tallest peak on the planet"], 2)
    assert results[0][0].document.id in {"f20", "f21"}  # exact names: BM25 and dense agree
    assert results[1][0].document.id == "f3"  # no shared word: dense carries it


# ------------------------------------------------------------------------- episodes
@pytest.mark.parametrize("which", ["dense", "hybrid"])
def test_episodes_run_with_dense_and_hybrid(flat, which):
    from research_env import MultiHopSearchEnv
    from research_env.retrievers.bm25 import BM25Retriever

    retriever = flat if which == "dense" else HybridRetriever([BM25Retriever.build(DOCS), flat])
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, top_k=2, max_turns=4)
    env.reset(options={"index": 0})
    observation, reward, terminated, _, _ = env.step(
        "who</think><search>Brisa Telk founded</search>"
    )
    assert "Quimby Forge" in observation and not terminated and reward == 0.0
    observation, *_ = env.step("<think>where</think><search>Quimby Forge headquarters</search>")
    assert "Ostravel" in observation
    _, reward, terminated, _, info = env.step("<think>so</think><answer>\\boxed{Ostravel}</answer>")
    assert terminated and reward == 1.0
    assert info["searches"] == 2
