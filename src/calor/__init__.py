"""calor — harden image classifiers against model inversion with CALoR, and measure what leaks.

The Python API a researcher imports; the `calor` command is a thin shell over it::

    from calor import load_scenario, Workspace, train_target, train_evaluation_model, attack_target
    sc = load_scenario("mnist")
    target = train_target(sc, "calor", seed=0)
    run = attack_target(sc, target, "gmi", seed=0)
    print(run.metrics["attack_acc@1"])
"""

__version__ = "0.1.0"

from .attacks import ATTACKS, ThreatModel, build_attack, make_oracle  # noqa: E402
from .defenses import DEFENSES, build_defense, ca_target_confidence, confidence_adaptation_loss  # noqa: E402
from .harden import HardenRecord, harden  # noqa: E402
from .audit import AuditResult, audit  # noqa: E402
from .errors import ArtifactError, CalorError, ConfigError, DataError, MetricError, ThreatModelError  # noqa: E402
from .models import CLASSIFIERS, LowRankHead, affected_convs, build_classifier, make_conv_safe  # noqa: E402
from .attack_runs import AttackRun, attack_target  # noqa: E402
from .scenario_data import load_data  # noqa: E402
from .targets import TrainedClassifier, load_classifier, train_evaluation_model, train_target  # noqa: E402
from .workspace import Workspace  # noqa: E402
from .runtime import configure_threads  # noqa: E402
from .scenario import Scenario, builtin_scenarios, load_scenario  # noqa: E402
from .weights import load_weights  # noqa: E402

__all__ = [
    "ATTACKS", "ArtifactError", "AuditResult", "audit", "HardenRecord", "AttackRun", "CLASSIFIERS", "CalorError", "ConfigError", "DEFENSES", "DataError",
    "LowRankHead", "MetricError", "Scenario", "ThreatModel", "ThreatModelError", "TrainedClassifier", "Workspace",
    "affected_convs", "attack_target", "build_attack", "build_classifier", "build_defense", "builtin_scenarios",
    "ca_target_confidence", "confidence_adaptation_loss", "configure_threads", "harden", "load_classifier", "load_data",
    "load_scenario", "load_weights", "make_conv_safe", "make_oracle", "train_evaluation_model", "train_target",
]
