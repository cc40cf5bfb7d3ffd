"""The widely copied notebook recipe, reproduced as the benchmark baseline.

A pandas UDF that rebuilds MobileNetV2 from broadcast weights in every task and calls
`model.predict` on each Arrow batch, then writes the features to Parquet. This is what
`featurizer run` is compared against (same images, same machine).

    python bench/baseline.py INPUT_DIR OUTPUT_DIR WEIGHTS_FULL_H5
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
from PIL import Image


def main(input_dir: str, output_dir: str, weights_path: str) -> None:
    start = time.monotonic()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, element_at, pandas_udf, split
    from tensorflow.keras.applications.mobilenet_v2 import MobileNetV2, preprocess_input
    from tensorflow.keras.models import Model
    from tensorflow.keras.preprocessing.image import img_to_array

    spark = (
        SparkSession.builder.master("local[*]")
        .appName("notebook-baseline")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "1024")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")

    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(input_dir)
    )
    images = images.withColumn("label", element_at(split(images["path"], "/"), -2))

    model = MobileNetV2(weights=weights_path, include_top=True, input_shape=(224, 224, 3))
    new_model = Model(inputs=model.input, outputs=model.layers[-2].output)
    broadcast_weights = sc.broadcast(new_model.get_weights())

    def model_fn():
        model = MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))
        new_model = Model(inputs=model.input, outputs=model.layers[-2].output)
        new_model.set_weights(broadcast_weights.value)
        return new_model

    def preprocess(content):
        img = Image.open(io.BytesIO(content)).resize([224, 224])
        arr = img_to_array(img)
        return preprocess_input(arr)

    def featurize_series(model, content_series):
        batch = np.stack(content_series.map(preprocess))
        preds = model.predict(batch, verbose=0)
        return pd.Series([p.flatten() for p in preds])

    @pandas_udf("array<float>")
    def featurize_udf(content_series_iter: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for content_series in content_series_iter:
            yield featurize_series(model, content_series)

    features = images.repartition(20).select(
        col("path"), col("label"), featurize_udf("content").alias("features")
    )
    features.write.mode("overwrite").parquet(output_dir)
    rows = spark.read.parquet(output_dir).count()
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {"images": rows, "seconds": round(elapsed, 2), "images_per_s": round(rows / elapsed, 2)}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
