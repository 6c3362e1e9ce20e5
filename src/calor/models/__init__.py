"""Models: classifiers (registry, including the field's face architectures), heads (linear, low-rank), GAN generator and critic."""

from .classifiers import CLASSIFIERS, BasicBlock, Classifier, ConvNet, ResNet, build_classifier
from .conv_safety import SubsampledConv1x1, affected_convs, make_conv_safe
from .faces import FACE_ARCHS, IR50, IR152, VGG16BN, BottleneckIR, FaceNet64, field_prefix_map
from .gan import Critic, Generator
from .heads import ACTIVATIONS, LinearHead, LowRankHead

__all__ = [
    "ACTIVATIONS", "BottleneckIR", "CLASSIFIERS", "BasicBlock", "Classifier", "ConvNet", "Critic", "FACE_ARCHS", "FaceNet64",
    "Generator", "IR50", "IR152", "VGG16BN", "field_prefix_map",
    "LinearHead", "LowRankHead", "ResNet", "SubsampledConv1x1", "affected_convs", "build_classifier", "make_conv_safe",
]
