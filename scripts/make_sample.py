"""Build the bundled demo sample, pipelines/sample/reviews.parquet.

Text: the VADER ground-truth snippets (MIT licence, C.J. Hutto), shipped in the sdist of the PyPI
package vaderSentiment 3.3.2 under additional_resources/hutto_ICWSM_2014.tar.gz.

    pip download --no-deps --no-binary=:all: vaderSentiment==3.3.2 -d /tmp/v
    python scripts/make_sample.py /tmp/v/vaderSentiment-3.3.2.tar.gz

Needs pyarrow. The selection is deterministic (every k-th line of each file).
"""

import io
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

FILES = [
    ("movie", "movieReviewSnippets_GroundTruth.txt", 500),
    ("tweet", "tweets_GroundTruth.txt", 200),
    ("amazon", "amazonReviewSnippets_GroundTruth.txt", 200),
    ("nyt", "nytEditorialSnippets_GroundTruth.txt", 100),
]


def main(sdist: str, out: str = "pipelines/sample/reviews.parquet") -> None:
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(member).read()
    ids, texts, kinds, ratings = [], [], [], []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for kind, name, count in FILES:
            member = next(m for m in inner.getmembers() if m.name.endswith(name))
            lines = inner.extractfile(member).read().decode("utf-8", "replace").splitlines()
            rows = [line.split("\t") for line in lines if line.count("\t") >= 2]
            step = max(1, len(rows) // count)
            for row in rows[::step][:count]:
                ids.append(f"{kind}-{row[0]}")
                ratings.append(float(row[1]))
                texts.append(row[2].strip())
                kinds.append(kind)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "source": pa.array(kinds, pa.string()),
            "rating": pa.array(ratings, pa.float64()),
        }
    )
    pq.write_table(table, out, compression="zstd")
    print(f"wrote {out}: {table.num_rows} rows")


if __name__ == "__main__":
    main(*sys.argv[1:])
