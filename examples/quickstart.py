"""Quickstart: encode with elastic views, build a cascade index, query it.

python examples/quickstart.py            # default model (all-MiniLM-L6-v2, offline)
python examples/quickstart.py --model PATH
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esrag.data.corpus import read_corpus
from esrag.encoder import EspressoEncoder
from esrag.index import CascadeConfig, CascadeIndex

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--index", default=str(HERE.parent / "indexes" / "quickstart-example"))
    args = parser.parse_args()

    # 1. One forward pass gives every (layer, dim) view you ask for.
    encoder = EspressoEncoder(args.model)
    shallow, full = encoder.encode(
        ["Espresso is brewed under pressure.", "How is espresso made?"],
        views=[(2, 32), (encoder.num_layers, encoder.hidden_size)],
    )
    print(f"{encoder.name}: {encoder.num_layers} layers x {encoder.hidden_size} dims")
    print(
        f"  layer-2/32-dim similarity {float(shallow[0] @ shallow[1]):.3f}, "
        f"full-view similarity {float(full[0] @ full[1]):.3f}"
    )

    # 2. Build a cascade: coarse shortlist from 32 PCA dims, exact rerank with the full view.
    docs = list(read_corpus(HERE / "data" / "quickstart.jsonl"))
    config = CascadeConfig(coarse_dim=32, transform="pca", shortlist=20)
    index = CascadeIndex.build(
        encoder,
        [d.text for d in docs],
        ids=[d.id for d in docs],
        metadatas=[d.metadata for d in docs],
        config=config,
    )
    index.save(args.index)
    print(f"indexed {len(index)} documents into {args.index}")

    # 3. Query it (reload first, as a service would).
    index = CascadeIndex.load(args.index, encoder)
    for query, flt in (("why is the sky on mars red", None), ("what makes bread rise", {"topic": "cooking"})):
        result = index.search(query, k=3, filter=flt)
        print(f"\n{query!r}" + (f" (filter {flt})" if flt else ""))
        for doc, score in zip(index.get_by_ids(result.ids[0]), result.scores[0], strict=True):
            print(f"  {score:.3f}  {doc.id:<14} {doc.text[:70]}")


if __name__ == "__main__":
    main()
