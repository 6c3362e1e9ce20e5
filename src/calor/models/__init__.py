"""Models: classifiers (registry), heads (linear, low-rank), GAN generator and critic."""

from .classifiers import CLASSIFIERS, BasicBlock, Classifier, ConvNet, ResNet, build_classifier
from .conv_safety import SubsampledConv1x1, affected_convs, make_conv_safe
from .gan import Critic, Generator
from .heads import ACTIVATIONS, LinearHead, LowRankHead

__all__ = [
    "ACTIVATIONS", "CLASSIFIERS", "BasicBlock", "Classifier", "ConvNet", "Critic", "Generator",
    "LinearHead", "LowRankHead", "ResNet", "SubsampledConv1x1", "affected_convs", "build_classifier", "make_conv_safe",
]
