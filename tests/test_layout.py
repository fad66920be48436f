"""The one-way flow of the package, read from the sources' import statements:
models/ are networks only, families/ do not reach into data/ or the trainer,
evaluation/ does not know the families, and the trainer and main.py import
no particular family, dataset or evaluator."""

import ast
import pathlib

import pytest

from conftest import REPO

PACKAGE = REPO / "gen_jax"


def _imports(path: pathlib.Path) -> set[str]:
  """Every gen_jax module a file imports (`from gen_jax.x import y` counts
  as gen_jax.x.y, which may be a module or a name in gen_jax.x)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.update(f"{node.module}.{a.name}" for a in node.names)
  return {name for name in found if name.startswith("gen_jax")}


def _files(folder: str) -> list[pathlib.Path]:
  return sorted((PACKAGE / folder).glob("*.py"))


@pytest.mark.parametrize("folder,allowed,forbidden", [
    ("models", ("gen_jax.models",), ()),
    ("families", None, ("gen_jax.data", "gen_jax.train", "gen_jax.main",
                        "gen_jax.config")),
    ("evaluation", None, ("gen_jax.families", "gen_jax.train",
                          "gen_jax.main")),
    ("data", None, ("gen_jax.models", "gen_jax.families", "gen_jax.train",
                    "gen_jax.evaluation")),
])
def test_package_imports_flow_one_way(folder, allowed, forbidden):
  for path in _files(folder):
    for name in _imports(path):
      if allowed is not None:
        assert name.startswith(allowed), (path.name, name)
      assert not name.startswith(forbidden), (path.name, name)


def test_trainer_and_main_import_no_particular_part():
  """train.py and main.py reach families, data and evaluators only through
  their registries and generic modules (models.conv: the process-wide choice
  of convolution forms, shared by every network)."""
  generic = {"gen_jax.families", "gen_jax.data.pipeline",
             "gen_jax.evaluation.evaluators", "gen_jax.evaluation.grids",
             "gen_jax.models.conv"}
  for path in (PACKAGE / "train.py", PACKAGE / "main.py"):
    for name in _imports(path):
      for package in ("gen_jax.families", "gen_jax.data",
                      "gen_jax.evaluation", "gen_jax.models"):
        if name.startswith(package):
          assert name in generic, (path.name, name)


def test_the_checks_see_a_forbidden_import(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("from gen_jax.families import vae\nimport gen_jax.train\n")
  assert _imports(bad) == {"gen_jax.families.vae", "gen_jax.train"}
