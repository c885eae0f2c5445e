"""Benchmark corpus: 10,000 VADER snippets (movie reviews, tweets, Amazon reviews, NYT editorials,
in their natural length mix) plus 200 long documents (30 consecutive NYT snippets each),
written to .bench/corpus.parquet. Source: the vaderSentiment 3.3.2 sdist (MIT), taken from
$BERTFLOW_CACHE/wheels (default ~/.cache/bertflow/wheels) or downloaded there from PyPI.

    python bench/make_corpus.py [SDIST [OUT]]
"""

import io
import os
import pathlib
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

FILES = [
    ("movie", "movieReviewSnippets_GroundTruth.txt"),
    ("tweet", "tweets_GroundTruth.txt"),
    ("amazon", "amazonReviewSnippets_GroundTruth.txt"),
    ("nyt", "nytEditorialSnippets_GroundTruth.txt"),
]


SDIST = "vaderSentiment-3.3.2.tar.gz"


def sdist_path():
    """The sdist in the cache's wheels folder, downloaded from PyPI when it is not there yet."""
    cache = pathlib.Path(os.environ.get("BERTFLOW_CACHE", pathlib.Path.home() / ".cache/bertflow"))
    path = cache / "wheels" / SDIST
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", "--no-build-isolation", "vaderSentiment==3.3.2",
                        "-d", str(path.parent)], check=True)
    return path


def main(sdist=None, out=".bench/corpus.parquet", short=10_000, long_docs=200):
    sdist = sdist or sdist_path()
    with tarfile.open(sdist) as outer:
        m = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(m).read()
    rows = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for kind, name in FILES:
            m = next(m for m in inner.getmembers() if m.name.endswith(name))
            lines = inner.extractfile(m).read().decode("utf-8", "replace").splitlines()
            rows[kind] = [l.split("\t")[2].strip() for l in lines if l.count("\t") >= 2]
    pool = [t for kind, _ in FILES for t in rows[kind]]
    step = len(pool) / short
    texts = [pool[int(i * step)] for i in range(short)]
    nyt = rows["nyt"]
    for d in range(long_docs):
        start = (d * 30) % max(1, len(nyt) - 30)
        texts.append(" ".join(nyt[start : start + 30]))
    ids = [f"doc-{i:05d}" for i in range(len(texts))]
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts}), out)
    print(f"wrote {out}: {len(texts)} records")


if __name__ == "__main__":
    main(*sys.argv[1:])
