"""Several retrieval servers behind one client: naming them, merging shards, pacing retries.

Pure functions the HTTP client (:mod:`research_env.retrievers.http`) builds on:

- :func:`parse_endpoints`: ``"http://a:8000,http://b:8000#shard"`` (what fits in a YAML
  ``env.retriever`` string), or a list of URLs, into base URLs, the policy and the
  protocol an endpoint path implies;
- :func:`merge_shards`: each shard's top-k for one query -> the corpus-wide top-k;
- :func:`backoff_delay`: exponential backoff with jitter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from research_env.retrievers.base import SearchHit

__all__ = ["backoff_delay", "merge_shards", "parse_endpoints"]

# Endpoint paths a user may paste as part of the URL; they also pin the protocol.
ENDPOINT_SUFFIXES = {
    "/retrieve": "search-r1",
    "/batch_search": "flashrag",
    "/search": "flashrag",
}


def parse_endpoints(
    url: str | Sequence[str], policies: Sequence[str]
) -> tuple[list[str], str | None, str | None]:
    """``(base URLs, policy named by a #fragment or None, protocol implied or None)``.

    ``url`` is one URL, several separated by commas, or a list; a trailing ``#<policy>``
    on the string names the policy. Each URL may end in an endpoint path (which is
    stripped and implies the protocol; all must agree). Raises ValueError on anything else.
    """
    policy = None
    if isinstance(url, str):
        text, _, fragment = url.partition("#")
        if fragment:
            if fragment not in policies:
                raise ValueError(
                    f"unknown policy #{fragment} in {url!r}; use one of "
                    + ", ".join(f"#{p}" for p in policies)
                )
            policy = fragment
        urls = [part.strip() for part in text.split(",")]
    else:
        urls = [str(part).strip() for part in url]
    if not urls or any(not u for u in urls):
        raise ValueError(f"need at least one server URL, got {url!r}")
    bases, implied = [], set()
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {u!r}")
        base = u.rstrip("/")
        for suffix, protocol in ENDPOINT_SUFFIXES.items():
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                implied.add(protocol)
                break
        bases.append(base)
    if len(implied) > 1:
        raise ValueError(f"the URLs' endpoints imply different protocols: {sorted(implied)}")
    if len(set(bases)) != len(bases):
        raise ValueError(f"a server is listed twice: {bases}")
    return bases, policy, (implied.pop() if implied else None)


def merge_shards(per_shard: Sequence[Sequence[SearchHit]], k: int) -> list[SearchHit]:
    """One query's hits from every shard -> the top ``k`` by score (highest first; ties
    keep shard order, then each shard's own order); a document id is kept once."""
    ranked = sorted(
        (
            (hit.score, shard, rank, hit)
            for shard, hits in enumerate(per_shard)
            for rank, hit in enumerate(hits)
        ),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    merged: list[SearchHit] = []
    seen: set[str] = set()
    for *_, hit in ranked:
        if hit.document.id in seen:
            continue
        seen.add(hit.document.id)
        merged.append(hit)
        if len(merged) == k:
            break
    return merged


def backoff_delay(attempt: int, backoff: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``backoff * 2**(attempt-1)``
    capped at ``cap``, then drawn uniformly between half of it and all of it ("equal
    jitter": workers that failed at the same moment spread their retries out, and the
    wait never exceeds the un-jittered one, so the worst case stays predictable)."""
    delay = min(cap, backoff * 2 ** (attempt - 1))
    return rng.uniform(delay / 2, delay)
