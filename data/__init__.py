"""Data: datasets as tensors, splits, batches and CaMU's counterfactual set."""

from data.batches import batch_indices, num_batches
from data.counterfactual import Counterfactuals, build_counterfactuals
from data.datasets import DataError, Dataset, ImageSet, load_dataset
from data.rng import generator
from data.splits import Split, make_split

__all__ = ["Counterfactuals", "DataError", "Dataset", "ImageSet", "Split", "batch_indices",
           "build_counterfactuals", "generator", "load_dataset", "make_split", "num_batches"]
