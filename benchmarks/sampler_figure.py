r"""One picture of a sampler table's rows: the first samples of each row
(from the pictures benchmarks/sampler_table.py wrote), labeled.

  python benchmarks/sampler_figure.py --table_dir=runs/sampler_table_n500 \
      --out=docs/images/diffusion_samplers_mnist.png
"""

import json
import pathlib

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

_TABLE = flags.DEFINE_string("table_dir", "runs/sampler_table_n500",
                             "The directory sampler_table.py wrote.")
_OUT = flags.DEFINE_string("out", "diffusion_samplers.png", "Picture to write.")
_COLUMNS = flags.DEFINE_integer("columns", 16, "Samples shown per row.")


def main(argv):
  del argv
  table = pathlib.Path(_TABLE.value)
  rows = [r for r in json.loads((table / "table.json").read_text())
          if "picture" in r]
  fd_key = next(k for k in rows[0] if k.startswith("fd_"))
  strips = []
  for r in rows:
    grid = np.asarray(Image.open(table / r["picture"]))
    cell = (grid.shape[1] - 2) // 8  # make_grid: 8 per row, 2 px padding
    first = [grid[2 + (i // 8) * cell:(i // 8 + 1) * cell,
                  2 + (i % 8) * cell:(i % 8 + 1) * cell]
             for i in range(_COLUMNS.value)]
    strips.append(np.concatenate(first, axis=1))
  fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.8 * len(rows)))
  for ax, r, strip in zip(np.atleast_1d(axes), rows, strips):
    ax.imshow(strip, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(f"{r['row']}\n{r['evaluations']} NFE, FD {r[fd_key]:.1f}",
                  rotation=0, ha="right", va="center", fontsize=8)
  fig.subplots_adjust(left=0.24, right=0.99, top=0.99, bottom=0.01, hspace=0.1)
  fig.savefig(_OUT.value, dpi=80)
  Image.open(_OUT.value).convert("L").save(_OUT.value, optimize=True)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
