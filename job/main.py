"""spark-submit entry point: `spark-submit job/main.py --input URI --output URI [...]`.

Takes exactly the options of `featurizer run` (see `featurizer run --help`).
"""

import sys

from featurizer.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main(["run", *sys.argv[1:]]))
