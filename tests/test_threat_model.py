"""The threat model is enforced, not conventional.

Two halves: at run time the known escape routes out of an oracle and out of the attacker's store are
closed; in the source, every attack module (every file of calor.attacks except the trusted boundary,
oracle.py and base.py) is inspected for any access outside the attacker's surface: private or dunder
attributes of objects it was handed, reflection builtins, files, and calor's internal modules.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest
import torch
from torch import nn

import calor.attacks as attacks_pkg
from calor import build_classifier, make_oracle
from calor.attacks import ATTACKS, ThreatModel
from calor.attacks.oracle import DerivedWhiteBoxOracle
from calor.prior_store import Priors
from calor.workspace import Workspace
from calor.scenario import Scenario

ATTACKS_DIR = Path(attacks_pkg.__file__).parent
BOUNDARY = {"oracle.py", "base.py", "__init__.py"}  # the surface itself, and the registration imports

# Modules an attack may import: its own package's helpers, models, configs, errors and progress bars.
ALLOWED_CALOR = {"attacks", "models", "errors", "config", "registry", "progress", "scenario"}
# Per file: the GAN prior's training loop may train data-parallel (ranks, gradient sums; calor.parallel
# holds no data). No attack module may touch the process group.
ALLOWED_CALOR_IN = {"priors.py": {"parallel"}}
ALLOWED_THIRD_PARTY = {"torch", "numpy", "kornia", "math", "time", "copy", "dataclasses", "typing", "enum", "hashlib",
                       "functools", "itertools", "collections", "__future__"}
FORBIDDEN_CALLS = {"getattr", "setattr", "delattr", "vars", "globals", "locals", "eval", "exec", "compile", "__import__",
                   "open", "breakpoint"}
CHECKPOINT_NAMES = {"Checkpointer", "no_checkpoints", "resume_loop", "snapshot_loop"}  # Checkpointer: for annotations
# attribute names of file and network readers in the allowed libraries (torch.load, np.fromfile, kornia.io...)
FILE_READERS = {"load", "load_file", "from_file", "fromfile", "memmap", "loadtxt", "genfromtxt", "hub", "io", "read_image",
                "load_image", "urlopen"}
ALLOWED_DUNDERS = {"__init__", "__name__", "__doc__", "__class__", "__post_init__"}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def reachable_modules(obj: object) -> list[object]:
    """Objects one step from `obj` (its attributes / slots), the way an attack could walk them."""
    return [r for r in gc.get_referents(obj) if not isinstance(r, type)]


# ----------------------------------------------------------------------------------------------- run time


@pytest.mark.parametrize("tm", list(ThreatModel))
def test_known_escape_routes_out_of_an_oracle_are_closed(tm: ThreatModel) -> None:
    model = tiny_model()
    oracle = make_oracle(model, tm, 3, (1, 16, 16))
    for route in ("_LabelOnlyOracle__model", "_logits_nograd", "_module", "model", "_model", "__dict__"):
        assert not hasattr(oracle, route), route
    with pytest.raises(TypeError):
        vars(oracle)
    with pytest.raises(AttributeError):
        oracle.queries = 0  # an attack cannot hide the queries it spent
    with pytest.raises(AttributeError):
        oracle.sneaky = model  # no new attributes either (slots)
    # nothing an attack can walk to from the oracle object is the model or holds it
    assert not any(isinstance(r, nn.Module) for r in reachable_modules(oracle))
    if tm is ThreatModel.WHITE_BOX:
        assert oracle.module is model  # white-box grants the module, on purpose
    else:
        assert not hasattr(oracle, "module") and not hasattr(oracle, "logits")
    if tm is ThreatModel.LABEL_ONLY:
        assert not hasattr(oracle, "probs")


def test_derived_oracle_counts_into_its_parent_and_hides_it() -> None:
    parent = make_oracle(tiny_model(), ThreatModel.WHITE_BOX, 3, (1, 16, 16))
    derived = DerivedWhiteBoxOracle(parent, tiny_model())
    derived.logits(torch.randn(3, 1, 16, 16))
    again = DerivedWhiteBoxOracle(derived, tiny_model())
    again.logits(torch.randn(2, 1, 16, 16))
    assert parent.queries == derived.queries == again.queries == 5
    assert not hasattr(derived, "parent") and not hasattr(derived, "__dict__")


def test_the_attackers_store_offers_no_route_to_the_scenario_or_workspace(tiny_scenario: Scenario, tmp_path: Path) -> None:
    internal = Priors(tiny_scenario, 0, Workspace(cache=tmp_path / "cache"), target_hash="t")
    store = internal.for_attacker()
    for route in ("scenario", "ws", "workspace", "seed", "target_hash", "used", "queries", "_scenario", "__dict__"):
        assert not hasattr(store, route), route
    with pytest.raises(TypeError):
        vars(store)
    with pytest.raises(AttributeError):
        store.scenario = tiny_scenario
    assert not any(isinstance(r, (Priors, Workspace, Scenario)) for r in reachable_modules(store))
    # what it does offer: the budget (specs, no data paths), public images, the prior cache
    assert store.budget.prior == tiny_scenario.prior and store.budget.target == tiny_scenario.target
    assert not hasattr(store.budget, "data")
    assert torch.equal(store.public_images(), internal.public_images())


# ----------------------------------------------------------------------------------------------- source


def attack_sources() -> list[Path]:
    return sorted(p for p in ATTACKS_DIR.glob("*.py") if p.name not in BOUNDARY)


def _module_root(node: ast.ImportFrom) -> tuple[str, str]:
    """('calor', first package under calor) for a relative or absolute calor import, else (module, '')."""
    module = node.module or ""
    if node.level == 1:  # from .x import y: inside calor.attacks
        return "calor", "attacks"
    if node.level == 2:  # from ..x import y
        return "calor", module.split(".")[0]
    if module.split(".")[0] == "calor":
        return "calor", (module.split(".") + [""])[1]
    return module.split(".")[0], ""


def violations(path: Path) -> list[str]:
    """Every access in `path` outside the attacker's surface, as 'file:line: what'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{path.name}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "calor" or root not in ALLOWED_THIRD_PARTY:
                    bad(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            root, sub = _module_root(node)
            if root == "calor" and sub == "checkpoint":  # only what resumes a loop with a checkpointer it was handed
                extra = {a.name for a in node.names} - CHECKPOINT_NAMES
                if extra:
                    bad(node, f"imports {', '.join(sorted(extra))} from calor.checkpoint")
            elif root == "calor":
                if sub not in ALLOWED_CALOR | ALLOWED_CALOR_IN.get(path.name, set()):
                    bad(node, f"import from calor.{sub or node.module}")
            elif root not in ALLOWED_THIRD_PARTY:
                bad(node, f"import from {node.module}")
            for alias in node.names:
                if alias.name.startswith("_") and alias.name != "annotations":
                    bad(node, f"imports private name {alias.name}")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            owner_is_self = ((isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                             or (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                                 and node.value.func.id == "super"))
            if attr.startswith("__") and attr.endswith("__"):
                if attr not in ALLOWED_DUNDERS:
                    bad(node, f"dunder attribute .{attr}")
            elif attr.startswith("_") and not owner_is_self:
                bad(node, f"private attribute .{attr} of something it was handed")
            elif attr in FILE_READERS:
                bad(node, f"reads files (.{attr})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Checkpointer":
            bad(node, "creates a Checkpointer (it could read snapshots anywhere; use the one it is handed)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            # getattr on a public constant name, or on the attack's own config (self): reading its own fields
            args_ok = node.func.id == "getattr" and len(node.args) >= 2 and (
                (isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                 and not node.args[1].value.startswith("_"))
                or (isinstance(node.args[0], ast.Name) and node.args[0].id == "self"))
            if not args_ok:
                bad(node, f"calls {node.func.id}()")
    return found


def test_every_registered_attack_lives_in_an_inspected_module() -> None:
    inspected = {p.stem for p in attack_sources()}
    for name in ATTACKS:
        module = ATTACKS.get(name).__module__
        assert module.startswith("calor.attacks.") and module.rsplit(".", 1)[1] in inspected, (name, module)


def test_no_attack_reaches_outside_its_oracle_and_public_data() -> None:
    problems = [v for path in attack_sources() for v in violations(path)]
    assert not problems, "attack code outside the threat-model surface:\n" + "\n".join(problems)


@pytest.mark.parametrize("snippet, expected", [
    ("x = oracle._LabelOnlyOracle__model", "private attribute"),
    ("x = oracle._logits_nograd(images)", "private attribute"),
    ("x = priors.gan.__self__.scenario", "dunder attribute .__self__"),
    ("x = oracle.label.__func__.__globals__", "dunder attribute"),
    ("from ..scenario_data import load_data", "import from calor.scenario_data"),
    ("from calor.data.splits import make_splits", "import from calor.data"),
    ("from .oracle import _HIDDEN", "private name _HIDDEN"),
    ("import gc", "import gc"),
    ("import os", "import os"),
    ("from ..checkpoint import load_artifact", "imports load_artifact from calor.checkpoint"),
    ("x = Checkpointer(path, {})", "creates a Checkpointer"),
    ("x = getattr(oracle, '_HIDDEN')", "calls getattr()"),
    ("x = getattr(oracle, name)", "calls getattr()"),
    ("x = vars(oracle)", "calls vars()"),
    ("x = open('private.png').read()", "calls open()"),
    ("x = torch.load('target.pt')", "reads files"),
    ("x = np.fromfile('private.bin')", "reads files"),
    ("x = kornia.io.load_image('private.png')", "reads files"),
])
def test_the_inspection_catches_each_known_escape_route(tmp_path: Path, snippet: str, expected: str) -> None:
    evil = tmp_path / "evil_attack.py"
    evil.write_text(f"def run(oracle, priors, images, name):\n    {snippet}\n" if not snippet.startswith(("import", "from"))
                    else snippet + "\n")
    found = violations(evil)
    assert any(expected in v for v in found), found
