"""featurizer: MobileNetV2 embeddings + PCA features for image folders, with Apache Spark."""

__version__ = "0.1.0"
