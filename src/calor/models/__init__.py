"""Models: classifiers (registry), heads (linear, low-rank), GAN generator and critic."""

from .classifiers import CLASSIFIERS, BasicBlock, Classifier, ConvNet, ResNet, build_classifier
from .gan import Critic, Generator
from .heads import ACTIVATIONS, LinearHead, LowRankHead

__all__ = [
    "ACTIVATIONS", "CLASSIFIERS", "BasicBlock", "Classifier", "ConvNet", "Critic", "Generator",
    "LinearHead", "LowRankHead", "ResNet", "build_classifier",
]
