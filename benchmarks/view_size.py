"""How big and how slow ``research-env view`` gets on a big run (the hostile-size check).

Writes ``--episodes`` synthetic token transcripts of ``--tokens`` tokens each (a prompt of
a quarter of them, then turns and a retrieved block), builds the page with the default caps,
and reports the file's size, the time to write it and, when Debian's chromium and
chromedriver are installed, the time headless Chromium takes to load and draw the first
page of episodes.

    python -m benchmarks.view_size --episodes 5000 --tokens 1500

Measured 2026-11-30 on the shared 2-core CPU box: a 220 MB input of 5,000 episodes gives
a page of 18.8 MB (500 episodes, every 10th) written in 5.4 s; headless Chromium loads it
and draws the first 25 episodes in 3.4 s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from algorithms.transcripts import FORMAT, SUFFIX, write_transcripts
from research_app.view import write_view


def synthetic_record(step: int, n: int) -> dict:
    prompt = n // 4
    response = n - prompt
    roles = "P" * prompt + "".join("TTTTERRRRE"[k % 10] for k in range(response))
    mask = [1 if r == "T" else 0 for r in roles[prompt:]]
    return {
        "format": FORMAT, "source": "grpo training", "step": step, "em": float(step % 3 == 0),
        "hops": 1 + step % 4, "searches": step % 3, "reward": 0.5, "finish_reason": "answered",
        "question": f"question {step}?", "prompt_len": prompt,
        "ids": list(range(n)), "tokens": [f" w{k % 97}" for k in range(n)], "roles": roles,
        "loss_mask": mask, "logprobs": [-1.2345] * response, "advantages": [0.7071] * response,
        "trained_tokens": sum(mask), "leaks": [],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=5000)
    parser.add_argument("--tokens", type=int, default=1500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="view-size-"))
    path = work / f"train{SUFFIX}"
    write_transcripts(path, [synthetic_record(s, args.tokens) for s in range(args.episodes)])
    t0 = time.perf_counter()
    page = write_view(work)
    seconds = time.perf_counter() - t0
    print(f"input {path.stat().st_size / 1e6:.1f} MB, {args.episodes} episodes x "
          f"{args.tokens} tokens -> page {page.stat().st_size / 1e6:.1f} MB "
          f"in {seconds:.2f} s")  # fmt: skip
    if shutil.which("chromium") and shutil.which("chromedriver"):
        print(f"headless Chromium: loaded and drew the first page in {_load(page):.2f} s")
    shutil.rmtree(work)


def _load(page: Path) -> float:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"):  # fmt: skip
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="view-size-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        t0 = time.perf_counter()
        driver.get(page.as_uri())  # returns after the load event: the first page is drawn
        return time.perf_counter() - t0
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
