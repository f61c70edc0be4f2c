"""The package tree is the architecture (docs/architecture.md): no import cycles between files or between
folders (every import counts, lazy ones inside functions included), at most 10 entries at the top of
`pipeline/`, every text/LM module under the one rule (`<layer>/text*.py`), and no dataclass default that
contradicts the YAML a user reads."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT

PACKAGE = ROOT / "pipeline"
TEXT_LIBRARIES = ("transformers", "textworld", "sentence_transformers")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The pipeline modules a file imports, anywhere in it (a lazy import is a dependency too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pipeline":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ""


def test_no_import_cycle_between_files() -> None:
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH) or [])


def test_no_import_cycle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        a = _folder(module)
        if not a:  # pipeline/__main__.py: the entry point imports every layer
            continue
        folders.setdefault(a, set()).update(b for b in map(_folder, targets) if b and b != a)
    assert _cycle(folders) is None, " -> ".join(_cycle(folders) or [])
    assert folders["core"] == set(), "core/ is the leaf every layer imports, and imports none of them"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_top_of_the_package_holds_at_most_ten_entries() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__main__.py", "__pycache__"))
    assert len(entries) <= 10, entries
    assert all((PACKAGE / e).is_dir() for e in entries), "the top level holds packages, one per layer"


def test_text_and_language_model_code_lives_in_text_modules() -> None:
    """The rule: the text/LM variant of layer X is `pipeline/X/text*.py` (textworld.py is one: it starts
    with text). A module that imports a language-model or text-game library at its top is one of them."""
    offenders = []
    for module, path in MODULES.items():
        name = module.rsplit(".", 1)[-1]
        top = ast.parse(path.read_text()).body
        imported = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        if imported & set(TEXT_LIBRARIES) and not name.startswith("text"):
            offenders.append(module)
        if name.startswith("text"):
            assert module.count(".") == 2, f"{module}: a text module sits inside a layer folder"
    assert offenders == []


# ------------------------------------------------------------------------------ one source for defaults
def _schemas() -> list[tuple[type, Path, str]]:
    """Each schema and the YAML a user reads for its values: the group's default option, or for an
    algorithm family its base option; `node` selects a nested key (e.g. algo.prior). Keys only other
    options set (a text encoder's pooling, a pretraining stage's epochs) take the dataclass default where
    an option leaves them out: no YAML to contradict."""
    from pipeline.config import algo, backbone, distill, env, evaluate, hardware, logger, reward, root, stage

    return [
        (env.EnvConfig, CONF / "env" / "cartpole.yaml", ""),
        (env.TextWorldConfig, CONF / "env" / "textworld.yaml", "textworld"),
        (backbone.BackboneConfig, CONF / "backbone" / "mlp.yaml", ""),
        (algo.DQNConfig, CONF / "algo" / "dqn.yaml", ""),
        (algo.PriorConfig, CONF / "algo" / "dqn.yaml", "prior"),
        (algo.TabularConfig, CONF / "algo" / "q_learning.yaml", ""),
        (algo.PolicyGradientConfig, CONF / "algo" / "ppo.yaml", ""),
        (algo.CriticConfig, CONF / "algo" / "ppo.yaml", "critic"),
        (hardware.HardwareConfig, CONF / "hardware" / "cpu.yaml", ""),
        (logger.LoggerConfig, CONF / "logger" / "mlflow.yaml", ""),
        (stage.StageConfig, CONF / "stage" / "rl.yaml", ""),
        (distill.DistillConfig, CONF / "distill" / "none.yaml", ""),
        (reward.RewardConfig, CONF / "reward" / "env.yaml", ""),
        (root.EvalConfig, CONF / "config.yaml", "eval"),
        (root.CheckpointConfig, CONF / "config.yaml", "checkpoint"),
        (root.PathsConfig, CONF / "config.yaml", "paths"),
        (root.Config, CONF / "config.yaml", ""),
        (evaluate.EvaluateConfig, CONF / "evaluate.yaml", ""),
    ]


@pytest.mark.parametrize(("schema", "yaml", "node"), _schemas(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_no_dataclass_default_contradicts_its_yaml(schema: type, yaml: Path, node: str) -> None:
    """The rule: the YAML holds the values a user reads (every key commented there); the dataclass holds the
    types and checks, and where it has a default (configs built in code, keys an option leaves out) that
    default is the YAML's value."""
    raw = OmegaConf.to_container(OmegaConf.load(yaml), resolve=False)
    values = raw.get(node, {}) if node else raw
    contradictions = []
    for f in dataclasses.fields(schema):
        if f.name not in values or f.name == "name":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is dataclasses.MISSING or default == "???" or dataclasses.is_dataclass(default):  # ??? = required
            continue
        if isinstance(default, str) and "${" in str(values[f.name]):
            continue  # an interpolation (paths under ${paths.outputs}): the same place, spelled for Hydra
        if default != values[f.name] and not (isinstance(default, float) and default == float(values[f.name])):
            contradictions.append(f"{f.name}: dataclass {default!r} vs {yaml.name} {values[f.name]!r}")
    assert contradictions == []
