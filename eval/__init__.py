"""Evaluation: pure functions on tensors (logits, accuracy, membership inference)."""

from eval.accuracy import accuracy
from eval.evaluate import METRICS, evaluate
from eval.mia import attack_accuracy, faithful_mia, sorted_softmax
from eval.predict import predict

__all__ = ["METRICS", "accuracy", "attack_accuracy", "evaluate", "faithful_mia", "predict", "sorted_softmax"]
