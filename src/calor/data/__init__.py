"""Datasets: sources (embedded MNIST, IDX directories, labelled image folders), the face datasets' layouts
and their identity protocol, decoding, transforms, and the scenario split."""

from .decode import DATA_ROOT_ENV, Decode, decode_images, resolve_data_path
from .identity_split import IdentityProtocol, load_or_make_split
from .listings import LISTINGS, Listing
from .sources import SOURCES, load_embedded_mnist, load_idx_directory, load_image_folder
from .splits import SplitData, make_splits
from .synthetic import write_fake_faces
from .transforms import random_flip, random_shift, to_model_range

__all__ = ["DATA_ROOT_ENV", "Decode", "IdentityProtocol", "LISTINGS", "Listing", "SOURCES", "SplitData", "decode_images",
           "load_embedded_mnist", "load_idx_directory", "load_image_folder", "load_or_make_split", "make_splits",
           "random_flip", "random_shift", "resolve_data_path", "to_model_range", "write_fake_faces"]
